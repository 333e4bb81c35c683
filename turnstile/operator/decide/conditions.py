"""A store's status and Events, decided from what one reconcile observed: pure functions.

Conditions follow the Kubernetes API conventions: ``type``, ``status`` (``"True"``,
``"False"``, ``"Unknown"``), a CamelCase ``reason``, a human ``message``,
``observedGeneration`` and ``lastTransitionTime``, which moves only when ``status`` changes.

* ``Connected``: the store library's probe proved Redis works in the declared mode.
* ``ConfigRendered``: the store's section is in its ConfigMap (or no ConfigMap is named).
* ``Ready``: both of the above; otherwise the reason and message of the first that is not.

Next to the conditions the status holds observed facts (mode, current master, healthy nodes,
probe latency), where the rendered section lives, and which Secret key each ``${VAR}`` and
TLS file must come from. :func:`events` compares the old status with the new one and says what
a person should hear about: a failover that moved the master, a node that left, a store that
became (un)ready, TLS that stopped verifying Redis (``TLSVerificationOff``, once: the status's
``tlsWarning`` remembers it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Final

from turnstile.operator.model.errors import SpecError
from turnstile.operator.model.specs import StoreSpec
from turnstile.stores.probe import ProbeReport

READY: Final = "Ready"
CONNECTED: Final = "Connected"
CONFIG_RENDERED: Final = "ConfigRendered"
#: Present when the store has ``spec.rollout``: whether the operator can act on it.
ROLLOUT: Final = "Rollout"
_ORDER: Final = (READY, CONNECTED, CONFIG_RENDERED, ROLLOUT)

TRUE: Final = "True"
FALSE: Final = "False"
UNKNOWN: Final = "Unknown"

#: Every reason this package writes, by condition (documented in docs/operator.md).
REASONS: Final = {
    CONNECTED: (
        "Connected", "InvalidSpec", "SecretNotFound", "SecretKeyNotFound", "SecretNotOptedIn",
        "Unreachable",
        "AuthenticationFailed", "TLSVerificationFailed", "ClusterUnhealthy", "SlotsNotCovered",
        "MasterUnknown",
        "NoQuorum", "RedisError", "InvalidSettings", "DatabaseOutOfRange", "Pending",
    ),
    CONFIG_RENDERED: (
        "Rendered", "NoConfigMap", "InvalidSpec", "ConfigMapConflict", "InvalidEndpointsYaml",
        "BaseNotFound", "BaseInvalid", "BaseConflict", "KubernetesError", "Pending",
    ),
    ROLLOUT: ("Valid", "InvalidSelector", "InvalidRollout", "WorkloadNotFound"),
    READY: ("Ready", "<the reason of the first condition that is not True>"),
}


def now_iso(moment: datetime | None = None) -> str:
    """RFC 3339 in UTC with seconds, as Kubernetes writes times."""
    moment = moment or datetime.now(timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str = ""

    @property
    def is_true(self) -> bool:
        return self.status == TRUE


def connected(report: ProbeReport) -> Condition:
    """``Connected`` from a probe report."""
    if report.ok:
        return Condition(CONNECTED, TRUE, "Connected", report.message)
    return Condition(CONNECTED, FALSE, report.reason or "RedisError", report.message)


#: The ``Rollout`` reason (and Warning Event) for a named workload that does not exist.
WORKLOAD_NOT_FOUND: Final = "WorkloadNotFound"


def rollout(
    problem: SpecError | None, missing: Sequence[str] = (), *, namespace: str = ""
) -> Condition:
    """``Rollout`` from reading ``spec.rollout``: ``InvalidSelector`` for a bad selector,
    ``WorkloadNotFound`` when a workload it names (``Kind/name``, in ``missing``) is not there."""
    if problem is None and missing:
        names = ", ".join(sorted(missing))
        verb = "does" if len(missing) == 1 else "do"
        return Condition(
            ROLLOUT, FALSE, WORKLOAD_NOT_FOUND,
            f"spec.rollout.workloads names {names}, which {verb} not exist in namespace "
            f"{namespace}: check the kind and name; it is rolled as soon as it exists",
        )  # fmt: skip
    if problem is None:
        return Condition(ROLLOUT, TRUE, "Valid", "spec.rollout is valid")
    selector = problem.field.startswith("spec.rollout.selector")
    reason = "InvalidSelector" if selector else "InvalidRollout"
    return Condition(
        ROLLOUT, FALSE, reason,
        f"{problem.message}; this store's workloads are not rolled until it is fixed",
    )  # fmt: skip


def ready(*parts: Condition) -> Condition:
    """``Ready``: True when every part is, else the first failing part's reason and message."""
    for part in parts:
        if not part.is_true:
            status = UNKNOWN if part.status == UNKNOWN else FALSE
            return Condition(READY, status, part.reason, f"{part.type}: {part.message}")
    return Condition(READY, TRUE, "Ready", "Redis answers and the configuration is rendered")


def merge(
    old: Iterable[Mapping[str, Any]] | None,
    new: Iterable[Condition],
    *,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """The new condition list; ``lastTransitionTime`` is kept where ``status`` did not change."""
    previous = {str(c.get("type")): c for c in (old or []) if isinstance(c, Mapping)}
    merged: list[dict[str, Any]] = []
    for condition in sorted(new, key=lambda c: _ORDER.index(c.type) if c.type in _ORDER else 9):
        before = previous.get(condition.type) or {}
        kept = before.get("lastTransitionTime")
        moved = before.get("status") != condition.status or not kept
        merged.append(
            {
                "type": condition.type,
                "status": condition.status,
                "reason": condition.reason,
                "message": condition.message,
                "observedGeneration": generation,
                "lastTransitionTime": now if moved else kept,
            }
        )
    return merged


@dataclass(frozen=True)
class Observation:
    """What one reconcile of one store found."""

    connected: Condition
    rendered: Condition
    mode: str | None = None
    report: ProbeReport | None = None
    #: ``{"name", "key", "section", "owned"}`` where the section lives, if anywhere.
    config_map: Mapping[str, Any] | None = None
    secret_env: Sequence[tuple[str, str, str]] = ()
    secret_files: Sequence[tuple[str, str, str]] = ()
    plain_env: Sequence[tuple[str, str]] = ()
    notes: Sequence[str] = field(default_factory=tuple)
    #: The ``Rollout`` condition, for a store with ``spec.rollout``.
    rollout: Condition | None = None
    #: Why TLS does not fully verify Redis (:func:`tls_warning`), if it does not.
    tls_warning: str | None = None
    #: ``status.transition`` (:func:`turnstile.operator.decide.transition.status_of`).
    transition: Mapping[str, Any] | None = None


#: The Event posted when a store's TLS stops verifying Redis (once, see :func:`events`).
TLS_VERIFICATION_OFF: Final = "TLSVerificationOff"


def tls_warning(store: StoreSpec) -> str | None:
    """Why the store's TLS does not fully verify Redis (``None``: it does, or TLS is off)."""
    tls = store.redis.tls
    if not tls.enabled:
        return None
    if not tls.verify:
        return (
            "spec.redis.tls.verify is false: TLS does not verify the Redis servers' "
            "certificates (ssl_cert_reqs: none), so anyone on the network path can impersonate "
            "them"
        )
    if not tls.check_hostname:
        return (
            "spec.redis.tls.checkHostname is false: TLS accepts a trusted certificate issued "
            "for any host name (ssl_check_hostname: false)"
        )
    return None


def build_status(
    observation: Observation,
    old_status: Mapping[str, Any] | None,
    *,
    generation: int,
    now: str,
) -> dict[str, Any]:
    """The whole status this package owns (``None`` values delete stale fields in a merge patch)."""
    old = old_status or {}
    parts = [observation.connected, observation.rendered]
    if observation.rollout is not None:
        parts.append(observation.rollout)
    conditions = [ready(*parts), *parts]
    report = observation.report
    # A failed probe keeps the last master and node count seen (so a failover that passes
    # through a failing probe is still reported as a move); a new mode forgets them.
    same_mode = old.get("mode") == observation.mode
    master: str | None
    nodes: int | None
    sentinels: int | None
    latency: float | None
    if report is not None and report.ok:
        master, nodes = report.master, report.nodes
        sentinels, latency = report.sentinels or None, report.latency_ms
    else:
        master = old.get("master") if same_mode else None
        nodes = old.get("nodes") if same_mode else None
        sentinels, latency = None, None
    return {
        "observedGeneration": generation,
        "conditions": merge(old.get("conditions"), conditions, generation=generation, now=now),
        "mode": observation.mode,
        "master": master,
        "nodes": nodes,
        "sentinels": sentinels,
        "latencyMs": latency,
        "configMap": dict(observation.config_map) if observation.config_map else None,
        "secretEnv": [
            {"name": env, "secretName": secret, "secretKey": key}
            for env, secret, key in observation.secret_env
        ]
        or None,
        "secretFiles": [
            {"path": path, "secretName": secret, "secretKey": key}
            for path, secret, key in observation.secret_files
        ]
        or None,
        "env": [{"name": env, "value": value} for env, value in observation.plain_env] or None,
        "tlsWarning": observation.tls_warning,
        "transition": dict(observation.transition) if observation.transition else None,
    }


def _essence(status: Mapping[str, Any]) -> dict[str, Any]:
    essence = {k: v for k, v in status.items() if k not in ("latencyMs", "conditions") and v}
    essence["conditions"] = [
        {k: v for k, v in c.items() if k != "lastTransitionTime"}
        for c in status.get("conditions") or []
        if isinstance(c, Mapping)
    ]
    return essence


def merge_patch(
    old_status: Mapping[str, Any] | None, new_status: Mapping[str, Any]
) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns ``old_status`` into ``new_status`` for the keys
    this operator writes (those of ``new_status``): a key the new status no longer has inside
    one of them is sent as ``null``, because a merge patch keeps what it does not name. Without
    that, ``status.transition.pending`` outlived the held change it described for as long as the
    transition that change started. Top-level keys other writers own (kopf's) are left alone.
    """
    return _patch(old_status or {}, new_status)


def _patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            inner = _patch(before, value)
            inner.update({k: None for k in before if k not in value})
            out[key] = inner
        else:
            out[key] = value
    return out


def needs_update(old_status: Mapping[str, Any] | None, new_status: Mapping[str, Any]) -> bool:
    """Whether writing ``new_status`` tells anyone anything new.

    Latency jitters on every probe; it is rewritten only when it moved by more than half (and
    at least a millisecond), so a recheck timer does not patch every store every interval.
    """
    old = old_status or {}
    if _essence(old) != _essence(new_status):
        return True
    before, after = old.get("latencyMs"), new_status.get("latencyMs")
    if (before is None) != (after is None):
        return True
    if before is None or after is None:
        return False
    delta = abs(float(after) - float(before))
    return delta > 1.0 and delta > 0.5 * float(before)


@dataclass(frozen=True)
class Event:
    type: str  # "Normal" or "Warning"
    reason: str
    message: str


TRANSITION_STARTED: Final = "TransitionStarted"
TRANSITION_ENDED: Final = "TransitionEnded"
TRANSITION_PENDING: Final = "TransitionPending"
TRANSITION_CREDENTIALS: Final = "TransitionCredentialsChanged"


def _describe(previous: Any) -> str:
    if not isinstance(previous, Mapping):
        return "the previous settings"
    return ", ".join(f"{k}={v}" for k, v in previous.items() if k != "type") or "the previous"


def _transition_events(before: Any, after: Any) -> list[Event]:
    """Started (new ``until``), held change (``pending`` appears), ended (gone)."""
    before = before if isinstance(before, Mapping) else {}
    after = after if isinstance(after, Mapping) else {}
    found: list[Event] = []
    if after and after.get("until") != before.get("until"):
        found.append(Event(
            "Normal", TRANSITION_STARTED,
            f"lock settings changed: new pods also lock as the running ones "
            f"({_describe(after.get('from'))}) until {after.get('until')}",
        ))  # fmt: skip
    if after.get("warning") and after.get("warning") != before.get("warning"):
        found.append(Event("Warning", TRANSITION_CREDENTIALS, str(after["warning"])))
    if after.get("pending") and not before.get("pending"):
        found.append(Event(
            "Warning", TRANSITION_PENDING,
            f"another lock-affecting change waits for the transition to end at "
            f"{after.get('until')}; chained transitions are not supported",
        ))  # fmt: skip
    if before and not after:
        found.append(Event(
            "Normal", TRANSITION_ENDED,
            f"transition ended ({before.get('until')}): pods lock with the new settings only",
        ))  # fmt: skip
    return found


def _condition(status: Mapping[str, Any] | None, kind: str) -> Mapping[str, Any]:
    for c in (status or {}).get("conditions") or []:
        if isinstance(c, Mapping) and c.get("type") == kind:
            return c
    return {}


def events(old_status: Mapping[str, Any] | None, new_status: Mapping[str, Any]) -> list[Event]:
    """What changed between two statuses that a person should see as an Event."""
    old = old_status or {}
    found: list[Event] = []
    before, after = old.get("master"), new_status.get("master")
    if before and after and before != after:
        found.append(
            Event("Warning", "MasterChanged", f"Redis master moved from {before} to {after}")
        )
    nodes_before, nodes_after = old.get("nodes"), new_status.get("nodes")
    if isinstance(nodes_before, int) and isinstance(nodes_after, int):
        if nodes_after < nodes_before:
            found.append(
                Event("Warning", "NodeLeft", f"healthy Redis nodes went from {nodes_before} "
                      f"to {nodes_after}")
            )
        elif nodes_after > nodes_before:
            found.append(
                Event("Normal", "NodeJoined", f"healthy Redis nodes went from {nodes_before} "
                      f"to {nodes_after}")
            )
    # Said once when it appears (or changes), not at every re-check: the status remembers it.
    weak_tls = new_status.get("tlsWarning")
    if weak_tls and weak_tls != old.get("tlsWarning"):
        found.append(Event("Warning", TLS_VERIFICATION_OFF, str(weak_tls)))
    found.extend(_transition_events(old.get("transition"), new_status.get("transition")))
    # A missing workload is said once per set of missing names, whatever Ready says (a store
    # not Ready for another reason would hide it), and Ready does not say it a second time.
    named_before, named = _condition(old, ROLLOUT), _condition(new_status, ROLLOUT)
    missing_said = False
    if named.get("reason") == WORKLOAD_NOT_FOUND and (
        (named_before.get("reason"), named_before.get("message"))
        != (named.get("reason"), named.get("message"))
    ):
        found.append(Event("Warning", WORKLOAD_NOT_FOUND, str(named.get("message", ""))))
        missing_said = True
    was, now = _condition(old, READY), _condition(new_status, READY)
    said = missing_said and now.get("reason") == WORKLOAD_NOT_FOUND
    moved = (was.get("status"), was.get("reason")) != (now.get("status"), now.get("reason"))
    if now and moved and not said:
        if now.get("status") == TRUE:
            found.append(Event("Normal", "Ready", str(now.get("message", ""))))
        else:
            found.append(
                Event("Warning", str(now.get("reason") or "NotReady"), str(now.get("message", "")))
            )
    return found
