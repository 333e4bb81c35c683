"""Store specs to ``endpoints.yml``: pure, shared by the operator and ``turnstile render``.

Each store renders one section of a bot's ``endpoints.yml`` (``lock_store`` or ``timer_store``)
with Rasa's own keys -- or of a Rasa Pro engine project's ``integrations.yml``
(``spec.configMap.format: integrations``: the same sections, which Rasa Pro's loader validates
and hands to the same factories) -- and :func:`merge_section` puts it into whatever the
ConfigMap already holds: the file is parsed, only that section is replaced, every other
section a user wrote is kept as it was (key order included).

Secrets are never rendered. A password becomes a ``${VAR}`` reference that Rasa expands from
the bot's environment when it reads the file (Rasa expands *plain*, unquoted scalars matching
``${...}``, so the reference is emitted unquoted). The names are stable and documented:

* ``TURNSTILE_LOCK_STORE_PASSWORD`` for ``lock_store``,
* ``TURNSTILE_TIMER_STORE_PASSWORD`` for ``timer_store``,
* ``TURNSTILE_LOCK_STORE_SENTINEL_PASSWORD`` / ``TURNSTILE_TIMER_STORE_SENTINEL_PASSWORD`` for
  the sentinels' own password (``sentinel_password``, sentinel mode).

TLS material is referenced as files a bot pod mounts from the Secrets:
``/etc/turnstile/lock_store/{ca.crt,tls.crt,tls.key}`` and the same under ``timer_store/``.
:func:`secret_env` and :func:`secret_files` say which Secret key each of those comes from; the
rollout code uses them to wire pods, and the store status repeats them for people.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import yaml

from turnstile.operator.decide import transition
from turnstile.operator.decide.credentials import TLS_CERT_KEY, TLS_KEY_KEY
from turnstile.operator.model.errors import ConflictError, EndpointsYamlError
from turnstile.operator.model.kinds import KINDS, KindInfo
from turnstile.operator.model.specs import (
    RASA_LOCK_LIFETIME_ENV,
    RedisSpec,
    StoreSpec,
    parse_spec,
)
from turnstile.stores.fingerprint import EXPECT_ENV, STORES_FILE_ENV, section_fingerprint

CA_FILE = "ca.crt"


def _info(kind: str) -> KindInfo:
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"kind: LockStore or TimerStore (got {kind!r})") from None


def _store(kind: str, spec: Mapping[str, Any] | StoreSpec) -> StoreSpec:
    return spec if isinstance(spec, StoreSpec) else parse_spec(kind, spec)


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def section(store: StoreSpec) -> dict[str, Any]:
    """The store's ``endpoints.yml`` section, Rasa's keys in a stable order."""
    info = store.info
    redis = store.redis
    out: dict[str, Any] = {
        "type": info.turnstile_type if store.implementation == "turnstile" else info.rasa_type,
        "deployment_mode": redis.deployment_mode,
    }
    if redis.deployment_mode == "standard" or (
        redis.deployment_mode == "cluster" and not redis.endpoints
    ):
        out["host"] = redis.host
        out["port"] = redis.port
    if redis.endpoints:
        out["endpoints"] = list(redis.endpoints)
    if redis.deployment_mode == "sentinel":
        out["sentinel_service"] = redis.sentinel_service
    if redis.db is not None and redis.deployment_mode != "cluster":
        out["db"] = redis.db
    out.update(_optional_keys(redis))
    if redis.username is not None:
        out["username"] = redis.username
    if redis.password is not None:
        out["password"] = "${" + info.password_env + "}"
    out.update(_tls_keys(store))
    out.update(_sentinel_keys(store))
    if store.lock_lifetime is not None and store.implementation != "rasa":
        out["lock_lifetime"] = store.lock_lifetime  # with rasa: TICKET_LOCK_LIFETIME, below
    if store.durable_replicas:  # never with rasa (parse_store refuses it)
        out["lock_durable_replicas"] = store.durable_replicas
    if store.poll_interval is not None:
        out["poll_interval"] = _number(store.poll_interval)
    return out


def _optional_keys(redis: RedisSpec) -> dict[str, Any]:
    """The keys a spec sets only when it says so (the store's defaults apply otherwise)."""
    out: dict[str, Any] = {}
    if redis.key_prefix is not None:
        out["key_prefix"] = redis.key_prefix
    if redis.socket_timeout is not None:
        out["socket_timeout"] = _number(redis.socket_timeout)
    if redis.failover_timeout is not None:  # never with rasa (parse_spec refuses it)
        out["failover_timeout"] = _number(redis.failover_timeout)
    return out


def _tls_keys(store: StoreSpec) -> dict[str, Any]:
    """``use_ssl`` and the mounted TLS files of the section, in Rasa's order."""
    tls, tls_dir = store.redis.tls, store.info.tls_dir
    if not tls.enabled:
        return {}
    out: dict[str, Any] = {"use_ssl": True}
    if tls.ca is not None:
        out["ssl_ca_certs"] = f"{tls_dir}/{CA_FILE}"
    if tls.client_cert_secret:
        out["ssl_certfile"] = f"{tls_dir}/{TLS_CERT_KEY}"
        out["ssl_keyfile"] = f"{tls_dir}/{TLS_KEY_KEY}"
    if not tls.verify:
        out["ssl_cert_reqs"] = "none"
    if not tls.check_hostname:
        out["ssl_check_hostname"] = False
    return out


def _sentinel_keys(store: StoreSpec) -> dict[str, Any]:
    """The sentinels' own credentials and TLS (sentinel mode); the password as ``${VAR}``."""
    sentinel = store.redis.sentinel
    if store.redis.deployment_mode != "sentinel":
        return {}
    out: dict[str, Any] = {}
    if sentinel.username is not None:
        out["sentinel_username"] = sentinel.username
    if sentinel.password is not None:
        out["sentinel_password"] = "${" + store.info.sentinel_password_env + "}"
    if sentinel.tls:
        out["sentinel_use_ssl"] = True
    return out


def secret_env(kind: str, spec: Mapping[str, Any] | StoreSpec) -> list[tuple[str, str, str]]:
    """``(env var, Secret name, Secret key)`` a bot pod must set for this store to work."""
    store = _store(kind, spec)
    info = _info(kind)
    found: list[tuple[str, str, str]] = []
    ref = store.redis.password
    if ref is not None:
        found.append((info.password_env, ref.name, ref.key))
    sentinel = store.redis.sentinel.password
    if sentinel is not None and store.redis.deployment_mode == "sentinel":
        found.append((info.sentinel_password_env, sentinel.name, sentinel.key))
    return found


def secret_files(kind: str, spec: Mapping[str, Any] | StoreSpec) -> list[tuple[str, str, str]]:
    """``(file path, Secret name, Secret key)`` a bot pod must mount for TLS."""
    store = _store(kind, spec)
    tls = store.redis.tls
    if not tls.enabled:
        return []
    base = _info(kind).tls_dir
    files: list[tuple[str, str, str]] = []
    if tls.ca is not None:
        files.append((f"{base}/{CA_FILE}", tls.ca.name, tls.ca.key))
    if tls.client_cert_secret:
        files.append((f"{base}/{TLS_CERT_KEY}", tls.client_cert_secret, TLS_CERT_KEY))
        files.append((f"{base}/{TLS_KEY_KEY}", tls.client_cert_secret, TLS_KEY_KEY))
    return files


def plain_env(kind: str, spec: Mapping[str, Any] | StoreSpec) -> list[tuple[str, str]]:
    """``(env var, value)`` a bot needs that is not a secret and has no ``endpoints.yml`` key.

    * The section's fingerprint (``TURNSTILE_EXPECT_LOCK_STORE`` / ``..._TIMER_STORE``,
      :mod:`turnstile.stores.fingerprint`): ``turnstile-rasa`` starts Rasa only on a file that
      holds exactly this section, so a pod never runs on a file another writer emptied.
    * Rasa's built-in ``concurrent_redis`` lock store reads its ticket lifetime from
      ``TICKET_LOCK_LIFETIME`` only, so ``lockLifetime`` with ``implementation: rasa`` lands
      here.
    * ``TURNSTILE_STORES_FILE=integrations`` for ``spec.configMap.format: integrations``: the
      launcher then checks ``integrations.yml`` in Rasa's project root, the file an engine
      project loads the sections from, instead of the ``--endpoints`` file.
    """
    store = _store(kind, spec)
    out = [(EXPECT_ENV[store.info.section], section_fingerprint(section(store)))]
    if store.config_map is not None and store.config_map.format == "integrations":
        out.append((STORES_FILE_ENV, "integrations"))
    if store.implementation == "rasa" and store.lock_lifetime is not None:
        out.append((RASA_LOCK_LIFETIME_ENV, str(store.lock_lifetime)))
    return out


# ------------------------------------------------------------------------- the file


def endpoints_problem(text: str | None) -> str | None:
    """Why ``text`` would not load as a bot's ``endpoints.yml`` (``None``: it loads).

    Rasa reads the file with ruamel.yaml (YAML 1.2) and needs a mapping of sections; so does
    this (:func:`turnstile.operator.decide.endpoints_yaml.load`: duplicate keys, unclosed
    brackets or quotes, bad indentation, tabs, a top level that is not a mapping). Without
    ruamel.yaml (``turnstile render`` outside the operator and Rasa) PyYAML's ``safe_load``
    refuses the same malformed documents except duplicate keys. The answer names a line,
    never the content.
    """
    try:
        try:
            from turnstile.operator.decide import endpoints_yaml  # noqa: PLC0415  (ruamel.yaml)
        except ImportError:
            load_endpoints(text)
        else:
            endpoints_yaml.load(text)
    except EndpointsYamlError as exc:
        return exc.detail
    return None


def load_endpoints(text: str | None) -> dict[str, Any]:
    """Parse an ``endpoints.yml``; empty is ``{}``; anything but a mapping is an error."""
    if text is None or not text.strip():
        return {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise EndpointsYamlError.not_yaml(None if mark is None else mark.line + 1) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise EndpointsYamlError.not_mapping(type(data).__name__)
    return data


def dump_endpoints(data: Mapping[str, Any]) -> str:
    """YAML text, block style, keys in the order given; ``${VAR}`` stays a plain scalar."""
    if not data:
        return ""
    return yaml.safe_dump(
        dict(data), sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000
    )


#: Turnstile's sections in their relative order. A section already in the file keeps its place;
#: a new one goes before the first later Turnstile section (else last), so the file, and the
#: rollout checksum over it, never depends on which store reconciled first.
SECTION_ORDER: Final = ("lock_store", "timer_store")


def merge_section(text: str | None, name: str, content: Mapping[str, Any] | None) -> str:
    """``text`` with section ``name`` replaced by ``content`` (removed when ``None``).

    Every other byte of ``text`` stays as the user wrote it
    (:func:`turnstile.operator.decide.endpoints_yaml.splice`, YAML 1.2 as Rasa reads it). The
    operator image always has ruamel.yaml (the ``operator`` extra); only ``turnstile render``
    in an environment without it (no Rasa, no operator extra) falls back to re-dumping the
    file with PyYAML.
    """
    try:
        from turnstile.operator.decide import endpoints_yaml  # noqa: PLC0415  (ruamel.yaml)
    except ImportError:
        return _merge_pyyaml(text, name, content)
    return endpoints_yaml.splice(text, name, content, SECTION_ORDER)


def _merge_pyyaml(text: str | None, name: str, content: Mapping[str, Any] | None) -> str:
    data = load_endpoints(text)
    if content is None:
        if name not in data:
            return text or ""
        data.pop(name)
    else:
        if data.get(name) == dict(content) and text is not None:
            return text
        if name in data or name not in SECTION_ORDER:
            data[name] = dict(content)
        else:
            data = _insert_in_order(data, name, dict(content))
    return dump_endpoints(data)


def _insert_in_order(data: dict[str, Any], name: str, content: Any) -> dict[str, Any]:
    rank = SECTION_ORDER.index(name)
    later = [k for k in data if k in SECTION_ORDER and SECTION_ORDER.index(k) > rank]
    out: dict[str, Any] = {}
    for key, value in data.items():
        if later and key == later[0]:
            out[name] = content
        out[key] = value
    out.setdefault(name, content)
    return out


def current_section(text: str | None, name: str) -> dict[str, Any] | None:
    """Section ``name`` as the file holds it now (``None``: absent or not a mapping)."""
    try:
        try:
            from turnstile.operator.decide import endpoints_yaml  # noqa: PLC0415  (ruamel.yaml)
        except ImportError:
            data: Mapping[str, Any] = load_endpoints(text)
        else:
            data = endpoints_yaml.load(text)
    except EndpointsYamlError:
        return None
    found = data.get(name)
    return _plain(found) if isinstance(found, Mapping) else None


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def decided_section(
    store: StoreSpec,
    current: Mapping[str, Any] | None,
    now: datetime,
    *,
    until: datetime | None = None,
    moved: Iterable[transition.SecretEnv] = (),
    recorded: Iterable[transition.SecretEnv] = (),
) -> tuple[dict[str, Any], transition.Decision | None]:
    """The section a store writes where its section last rendered was ``current``.

    ``moved`` and ``recorded``: see :func:`turnstile.operator.decide.transition.decide`.

    A LockStore's lock-affecting change carries a transition
    (:func:`turnstile.operator.decide.transition.decide`); a TimerStore's section is
    :func:`section` as it is.
    """
    wanted = section(store)
    if store.info.section != transition.SECTION or store.transition_seconds is None:
        return wanted, None
    decision = transition.decide(
        current, wanted, now=now, duration=store.transition_seconds, until=until,
        moved=tuple(moved), recorded=tuple(recorded),
    )  # fmt: skip
    return decision.content, decision


def _moved(
    previous: Iterable[tuple[str, str, str]], store: StoreSpec
) -> tuple[transition.SecretEnv, ...]:
    old = [{"name": e, "secretName": n, "secretKey": k} for e, n, k in previous]
    return transition.moved_secrets(old, secret_env(store.kind, store))


def without_transition(text: str) -> str:
    """``text`` with the lock section's transition keys taken out (``text`` itself if none).

    The rollout checksum is taken over this, so removing expired keys rolls nothing, while the
    change that started a transition (the section's own keys) rolls as any change does.
    """
    found = current_section(text, transition.SECTION)
    if found is None or not (transition.FROM_KEY in found or transition.UNTIL_KEY in found):
        return text
    return merge_section(text, transition.SECTION, transition.base(found))


def checksum(text: str) -> str:
    """A stable digest of a rendered file (for annotations that roll pods on change)."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


# ------------------------------------------------------------------- many stores


@dataclass(frozen=True, order=True)
class Target:
    """One key of one ConfigMap."""

    namespace: str
    name: str
    key: str

    def __str__(self) -> str:
        return f"ConfigMap {self.namespace}/{self.name} key {self.key}"


def target(store: StoreSpec) -> Target | None:
    if store.config_map is None:
        return None
    return Target(store.namespace, store.config_map.name, store.config_map.key)


def conflicts(stores: Iterable[StoreSpec]) -> dict[tuple[Target, str], list[str]]:
    """``(target, section)`` claimed by more than one store, with the claimants' names."""
    claims: dict[tuple[Target, str], list[str]] = {}
    for store in stores:
        where = target(store)
        if where is not None:
            claims.setdefault((where, store.info.section), []).append(store.name)
    return {claim: sorted(names) for claim, names in claims.items() if len(names) > 1}


def conflict_message(kind: str, where: Target, names: Iterable[str]) -> str:
    listed = ", ".join(sorted(names))
    return (
        f"{kind}s {listed} all render the {_info(kind).section} section of {where}; "
        f"only one {kind} may do so (give each a different spec.configMap)"
    )


def render_files(
    stores: Iterable[StoreSpec],
    existing: Mapping[Target, str] | None = None,
    *,
    now: datetime | None = None,
    until: datetime | None = None,
    previous_env: Mapping[Target, Iterable[tuple[str, str, str]]] | None = None,
) -> dict[Target, str]:
    """Every ConfigMap key the stores render, as the operator would write it.

    With ``now``, a LockStore whose lock-affecting settings differ from the section in
    ``existing`` renders a transition from it, as the operator does (``until`` overrides
    ``now + spec.transition.durationSeconds``; ``previous_env``: the previous stores'
    :func:`secret_env` per target, so a password whose Secret changed gets its own
    variable). Raises :class:`ConflictError` when two stores of one kind claim the same key.
    """
    chosen = [s for s in stores if s.config_map is not None]
    clashes = conflicts(chosen)
    if clashes:
        (where, section_name), names = sorted(clashes.items())[0]
        kind = next(i.kind for i in KINDS.values() if i.section == section_name)
        raise ConflictError(conflict_message(kind, where, names))
    files: dict[Target, str] = {}
    for store in sorted(chosen, key=lambda s: (s.namespace, s.name, s.kind)):
        claim = target(store)
        assert claim is not None
        base = files.get(claim, (existing or {}).get(claim, ""))
        content = (
            section(store)
            if now is None
            else decided_section(
                store, current_section(base, store.info.section), now, until=until,
                moved=_moved((previous_env or {}).get(claim, ()), store),
            )[0]
        )
        files[claim] = merge_section(base, store.info.section, content)
    return files
