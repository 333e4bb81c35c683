"""Mark stores in namespaces the operator does not watch (see
:mod:`turnstile.operator.decide.unwatched` for what and why): one cluster-wide read of both kinds
and a status patch for each store nobody serves, once per re-check interval."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from turnstile.operator.decide import conditions as cond
from turnstile.operator.decide.unwatched import message, status_patch, watches
from turnstile.operator.kube.client import Kube
from turnstile.operator.model.kinds import KINDS

logger = logging.getLogger(__name__)


async def report_once(kube: Kube, patterns: Sequence[str], *, now: str | None = None) -> int:
    """Mark every unserved store outside ``patterns``; returns how many were patched."""
    patched = 0
    for info in KINDS.values():
        for body in await kube.list_everywhere(info.plural):
            meta = body.get("metadata") or {}
            namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
            if not namespace or watches(namespace, patterns):
                continue
            patch = status_patch(body, now=now or cond.now_iso())
            if patch is None:
                continue
            await kube.patch_store_status(namespace, info.kind, name, patch)
            logger.warning("%s %s/%s: %s", info.kind, namespace, name, message(namespace))
            patched += 1
    return patched
