"""A LockStore's change of where it locks, rendered so that old and new pods stay peers.

During a rolling update old and new bot pods run side by side. When what they lock with
changes (another Redis, db, key prefix, deployment mode, lock store type), they would not
exclude each other. So when the operator renders such a change, the ``lock_store`` section
also names the section the running pods have, for as long as the rollout may take::

    lock_store:
      type: turnstile.rasa.TicketLockStore
      ...the new settings...
      transition_from: {...the previous section, exactly as it was rendered...}
      transition_until: "2026-12-01T18:30:00Z"

New pods hold a lock only when they hold both (the store library's side); after
``transition_until`` they use their own alone. The one idea of this module is that the state
of a transition lives where the pods read it, in the ConfigMap: :func:`decide` is a pure
function of the section the file holds now, the section the spec renders, the clock and
``spec.transition.durationSeconds``, so an operator restart, a second replica or the rollout
sync's drift correction all reach the same section.

Rules:

* **Lock-affecting** keys (:data:`LOCK_AFFECTING`) say where and how locks live: ``type``
  (``implementation``), ``deployment_mode``, ``host``, ``port``, ``endpoints``,
  ``sentinel_service``, ``db``, ``key_prefix``. A change of any of them starts a transition.
  Others do not: ``lock_lifetime`` and ``socket_timeout`` change no key, and credentials
  (``username``, ``password``) and TLS (``use_ssl``, certificates) reach the same keyspace of
  the same server (a move to a TLS port changes ``port``, which counts).
* A change made **during** a transition is held: the file keeps the section the transition
  started with (``status.transition.pending``) until ``transition_until``, then the held change
  starts its own transition from the section the pods then run. Chaining is not supported,
  and taking either end alone would leave pods that are not peers: with ``A -> B`` under way
  and ``B -> C`` asked for, a ``C`` pod transitioning from ``A`` stops sharing a lock with the
  ``B`` pods once their own ``transition_until`` passes, and one transitioning from ``B`` never
  shares one with the ``A`` pods still running.
* After ``transition_until`` the keys are removed at the next render. The rollout checksum is
  taken over the file without them
  (:func:`turnstile.operator.decide.render.without_transition`), so that removal rolls no pod:
  pods keep running with keys that have expired, which they ignore.
* A password whose Secret changed with the lock settings keeps the previous Secret's value in
  ``transition_from`` under its own variable (:data:`PREVIOUS_ENV`,
  ``${TURNSTILE_LOCK_PREVIOUS_PASSWORD}``); the Secret it comes from is recorded with the
  section (:mod:`turnstile.operator.decide.configmaps`), injected like the store's own env,
  and left out of the checksum. TLS files have one path per pod and are only warned about.
* ``durationSeconds: 0`` switches at once (no transition keys). TimerStores never transition:
  a timer belongs to one pod's session and moves with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Final

from turnstile.operator.model.errors import SpecError

__all__ = [
    "FROM_KEY",
    "LOCK_AFFECTING",
    "UNTIL_KEY",
    "Decision",
    "credentials_warning",
    "decide",
    "format_time",
    "lock_identity",
    "moved_secrets",
    "parse_time",
    "status_of",
]

FROM_KEY: Final = "transition_from"
UNTIL_KEY: Final = "transition_until"
SECTION: Final = "lock_store"
#: A ``${VAR}`` of the previous section whose Secret changed with the lock settings is renamed
#: in ``transition_from`` to its own variable, set from the previous Secret.
PREVIOUS_ENV: Final = {
    "TURNSTILE_LOCK_STORE_PASSWORD": "TURNSTILE_LOCK_PREVIOUS_PASSWORD",
    "TURNSTILE_LOCK_STORE_SENTINEL_PASSWORD": "TURNSTILE_LOCK_PREVIOUS_SENTINEL_PASSWORD",
}
_SECRET_KEYS: Final = ("password", "sentinel_password")
#: ``(env var, Secret name, Secret key)``, as ``render.secret_env`` gives them.
SecretEnv = tuple[str, str, str]

#: The section keys that decide which locks a pod takes (see the module doc).
LOCK_AFFECTING: Final = (
    "type", "deployment_mode", "host", "port", "endpoints", "sentinel_service", "db",
    "key_prefix",
)  # fmt: skip


def format_time(moment: datetime) -> str:
    """RFC 3339, UTC, seconds precision (what ``transition_until`` holds)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any, key: str = UNTIL_KEY) -> datetime:
    """An RFC 3339 time (or a Unix timestamp) as an aware UTC datetime."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, timezone.utc)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:
                return parsed.astimezone(timezone.utc)
    raise SpecError(key, 'an RFC 3339 time with a zone, e.g. "2026-12-01T18:30:00Z"', value)


def base(section: Mapping[str, Any]) -> dict[str, Any]:
    """The section without its transition keys."""
    return {k: v for k, v in section.items() if k not in (FROM_KEY, UNTIL_KEY)}


def lock_identity(section: Mapping[str, Any]) -> dict[str, Any]:
    """The lock-affecting keys of a section (absent ones left out)."""
    return {k: section[k] for k in LOCK_AFFECTING if k in section}


@dataclass(frozen=True)
class Decision:
    """The ``lock_store`` section to write, and the transition it carries."""

    content: dict[str, Any]
    #: The section the pods being replaced run (``transition_from``), while a transition runs.
    previous: Mapping[str, Any] | None = None
    until: datetime | None = None
    #: A lock-affecting change asked for during the transition, held until it ends.
    pending: bool = False
    #: True when this render starts the transition (``previous`` was just captured).
    started: bool = False
    #: The previous Secrets' env vars ``transition_from`` names (:data:`PREVIOUS_ENV`).
    secret_env: tuple[SecretEnv, ...] = ()


def _ongoing(
    current: Mapping[str, Any], now: datetime
) -> tuple[Mapping[str, Any], datetime] | None:
    previous, until = current.get(FROM_KEY), current.get(UNTIL_KEY)
    if not isinstance(previous, Mapping) or until is None:
        return None
    try:
        end = parse_time(until)
    except SpecError:
        return None  # a hand-made value the pods would refuse: not a transition we run
    return (previous, end) if now < end else None


def moved_secrets(old: Any, new: Iterable[SecretEnv]) -> tuple[SecretEnv, ...]:
    """The previous Secrets of password variables whose Secret changed (or went away).

    ``old`` is the store's ``status.secretEnv`` from before the change (what running pods
    were given), ``new`` what the spec renders now. The answer names the renamed variables.
    """
    now = {env: (secret, key) for env, secret, key in new}
    moved = []
    for item in old if isinstance(old, list) else []:
        if not isinstance(item, Mapping) or item.get("name") not in PREVIOUS_ENV:
            continue
        env, ref = str(item["name"]), (str(item.get("secretName")), str(item.get("secretKey")))
        if now.get(env) != ref:
            moved.append((PREVIOUS_ENV[env], *ref))
    return tuple(sorted(moved))


def _renamed(section: Mapping[str, Any], moved: Sequence[SecretEnv]) -> dict[str, Any]:
    names = {env for env, _, _ in moved}
    out = dict(section)
    for key in _SECRET_KEYS:
        value = out.get(key)
        for current, previous in PREVIOUS_ENV.items():
            if value == "${" + current + "}" and previous in names:
                out[key] = "${" + previous + "}"
    return out


def _named(section: Mapping[str, Any], moved: Sequence[SecretEnv]) -> tuple[SecretEnv, ...]:
    used = {str(section.get(k)) for k in _SECRET_KEYS}
    return tuple(e for e in moved if "${" + e[0] + "}" in used)


def decide(
    current: Mapping[str, Any] | None,
    wanted: Mapping[str, Any],
    *,
    now: datetime,
    duration: int,
    until: datetime | None = None,
    moved: Sequence[SecretEnv] = (),
    recorded: Sequence[SecretEnv] = (),
) -> Decision:
    """The section to render, given the one last rendered (``None``: none yet).

    ``wanted`` is what the spec renders (:func:`turnstile.operator.decide.render.section`);
    ``duration`` is ``spec.transition.durationSeconds``; ``until`` overrides ``now + duration``
    for a transition this render starts (``turnstile render --transition-until``). ``moved``
    (:func:`moved_secrets`) renames the previous section's password variables when their
    Secret changed; ``recorded`` are those of a transition already under way.
    """
    wanted = dict(wanted)
    if current is None or not isinstance(current, Mapping):
        return Decision(wanted)
    running = _ongoing(current, now)
    if running is not None:
        previous, end = running
        kept = _named(previous, recorded)
        if lock_identity(wanted) == lock_identity(base(current)):
            # Same locks as the transition's target: other settings pass, the transition stays.
            content = {**wanted, FROM_KEY: dict(previous), UNTIL_KEY: format_time(end)}
            return Decision(content, previous, end, secret_env=kept)
        return Decision(dict(current), previous, end, pending=True, secret_env=kept)
    old = base(current)
    if duration <= 0 or lock_identity(old) == lock_identity(wanted):
        return Decision(wanted)
    end = until or (now + timedelta(seconds=duration))
    old = _renamed(old, moved)
    return Decision(
        {**wanted, FROM_KEY: old, UNTIL_KEY: format_time(end)}, old, end, started=True,
        secret_env=_named(old, moved),
    )  # fmt: skip


def status_of(
    decision: Decision | None,
    old_status: Mapping[str, Any] | None = None,
    secrets: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """``status.transition``: where the pods being replaced lock, until when, and a warning
    when the previous section's ``${VAR}`` or TLS files now come from other Secrets.

    ``secrets`` is the new ``{"secretEnv": [...], "secretFiles": [...]}`` of the status; the
    previous ones are ``old_status``'s (the status written before this render).
    """
    if decision is None or decision.previous is None or decision.until is None:
        return None
    out: dict[str, Any] = {
        "from": lock_identity(decision.previous),
        "until": format_time(decision.until),
    }
    if decision.pending:
        out["pending"] = True
    if decision.secret_env:
        out["secretEnv"] = [
            {"name": env, "secretName": secret, "secretKey": key}
            for env, secret, key in decision.secret_env
        ]
    old = old_status or {}
    kept = old.get("transition") if isinstance(old.get("transition"), Mapping) else None
    if kept and kept.get("until") == out["until"] and kept.get("warning"):
        out["warning"] = kept["warning"]  # said when the transition started; kept, not redone
    elif decision.started:
        warning = credentials_warning(old, secrets or {})
        if warning is not None:
            out["warning"] = warning
    return out


def credentials_warning(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """Why the previous section may not connect from new pods (``None``: it will).

    Passwords whose Secret changed get their own variables (:data:`PREVIOUS_ENV`); TLS files
    do not: the previous section names the same paths, and a pod mounts the new Secrets
    there. A transition across a change of the TLS Secrets is rendered (locks stay exclusive
    wherever the previous Redis accepts the new files) but said loudly.
    """
    if _refs(old.get("secretFiles")) == _refs(new.get("secretFiles")):
        return None
    return (
        "the TLS Secret references changed with the lock settings: during the transition new "
        "pods reach the previous Redis with the new TLS files (one mount per path). Make the "
        "previous Redis accept them, or change the Redis first and the TLS Secrets after the "
        "transition"
    )


def _refs(items: Any) -> list[tuple[str, str, str]]:
    if not isinstance(items, list):
        return []
    return sorted(
        (str(i.get("name") or i.get("path")), str(i.get("secretName")), str(i.get("secretKey")))
        for i in items if isinstance(i, Mapping)
    )  # fmt: skip
