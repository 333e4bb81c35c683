"""Stores in namespaces the operator does not watch: say so on the store instead of silence.

A namespaced operator (``--namespace``) only sees the stores in its namespaces. A store created
anywhere else gets no status, no finalizer and no Event, and looks exactly like a store that is
still being worked on. With ``TURNSTILE_REPORT_UNWATCHED=true`` (the chart sets it in namespaced
mode, with ``TURNSTILE_WATCHED_NAMESPACES``) the operator lists both kinds cluster-wide once per
re-check interval (a read of the stores, nothing else) and gives each store

* outside the namespaces it watches, and
* not picked up by any other Turnstile operator (no ``turnstile.dev/finalizer``), and
* not being deleted,

the condition ``Ready=False``, reason :data:`REASON`. The message names the namespace and the
fix, and nothing about the operator that wrote it, so two namespaced releases that both do not
watch a namespace write the same condition once instead of taking turns. An operator that later
serves the namespace replaces the conditions with its own at its first reconcile.

:func:`watches` and :func:`status_patch` (here) are pure;
:func:`turnstile.operator.handlers.unwatched.report_once` does the I/O and
:mod:`turnstile.operator.handlers.stores` runs it once per re-check interval. Every replica reports
(kopf's peering covers only the watched namespaces); the patch is identical and only sent when
the condition is not there yet.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from typing import Any, Final

from turnstile.operator.decide import conditions as cond
from turnstile.operator.model.kinds import FINALIZER

REASON: Final = "NamespaceNotWatched"


def watches(namespace: str, patterns: Sequence[str]) -> bool:
    """Whether ``--namespace`` patterns (kopf's globs; ``!glob`` excludes) cover ``namespace``."""
    included = [p for p in patterns if not p.startswith("!")]
    excluded = [p[1:] for p in patterns if p.startswith("!")]
    if any(fnmatch.fnmatchcase(namespace, p) for p in excluded):
        return False
    return not included or any(fnmatch.fnmatchcase(namespace, p) for p in included)


def message(namespace: str) -> str:
    return (
        f"no Turnstile operator watches namespace {namespace!r}: nothing probes this store's "
        f"Redis, renders its section or rolls its workloads; add {namespace!r} to the chart's "
        f"watchNamespaces (or install it with clusterWide=true)"
    )


def status_patch(body: Mapping[str, Any], *, now: str) -> dict[str, Any] | None:
    """The merge patch that puts the ``NamespaceNotWatched`` condition on a store, or ``None``.

    ``None`` when another operator serves the store (its finalizer is there), when the store is
    being deleted, or when the condition is already exactly there.
    """
    meta = body.get("metadata") or {}
    if FINALIZER in (meta.get("finalizers") or []) or meta.get("deletionTimestamp"):
        return None
    generation = int(meta.get("generation") or 0)
    status = body.get("status") or {}
    old = [c for c in status.get("conditions") or [] if isinstance(c, Mapping)]
    condition = cond.Condition(cond.READY, cond.FALSE, REASON, message(str(meta.get("namespace"))))
    merged = cond.merge(
        [c for c in old if c.get("type") == cond.READY], [condition], generation=generation, now=now
    )
    if old == merged and status.get("observedGeneration") == generation:
        return None
    return {"status": {"observedGeneration": generation, "conditions": merged}}
