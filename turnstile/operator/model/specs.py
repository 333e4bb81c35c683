"""The two store kinds and their specs, read into typed values.

``LockStore`` and ``TimerStore`` share ``spec.redis`` (Rasa's ``endpoints.yml`` keys in
camelCase), ``spec.implementation`` and ``spec.configMap``; each adds one setting
(``lockLifetime``, ``pollInterval``). Everything about a kind that other modules need (its
``endpoints.yml`` section, the class a bot loads, the env var that carries its password, where
its TLS files are mounted) lives in :data:`KINDS`, so the CRD generator, the renderer and the
handlers cannot disagree.

:func:`parse_store` re-checks every rule the CRD schema enforces. The API server refuses bad
specs first; this is for specs that slipped past it (a CRD installed from an older release,
``kubectl replace --validate=false`` against an old server) and for ``turnstile render``, which
never sees an API server. The rule texts in :data:`RULES` are shared with the CRD's CEL
validations, so a user reads the same sentence from ``kubectl apply`` and from a condition.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, Literal, cast

from turnstile.operator.model import schema
from turnstile.operator.model.errors import SpecError
from turnstile.operator.model.kinds import KINDS, LOCK_STORE, KindInfo
from turnstile.stores.config import default_db, parse_address
from turnstile.stores.errors import ConfigurationError

DeploymentMode = Literal["standard", "cluster", "sentinel"]
Implementation = Literal["turnstile", "rasa"]
DEPLOYMENT_MODES: Final = ("standard", "cluster", "sentinel")
IMPLEMENTATIONS: Final = ("turnstile", "rasa")
DEFAULT_CONFIGMAP_KEY: Final = "endpoints.yml"
#: ``spec.configMap.format``: the file Rasa reads the sections from. ``endpoints``: the
#: ``--endpoints`` file of every Rasa; ``integrations``: ``integrations.yml`` of a Rasa Pro 3.21
#: engine project, authoritative there (Rasa ignores ``endpoints.yml`` in such a project).
ConfigFormat = Literal["endpoints", "integrations"]
CONFIG_FORMATS: Final = ("endpoints", "integrations")
#: The key a format defaults to: the name the file has where Rasa reads it.
FORMAT_KEYS: Final[dict[str, str]] = {
    "endpoints": DEFAULT_CONFIGMAP_KEY,
    "integrations": "integrations.yml",
}
DEFAULT_SENTINEL_SERVICE: Final = "mymaster"
DEFAULT_PORT: Final = 6379


#: Rasa's built-in lock store reads the ticket lifetime from this env var, not from the file.
RASA_LOCK_LIFETIME_ENV: Final = "TICKET_LOCK_LIFETIME"

_KEY_PREFIX: Final = re.compile(schema.KEY_PREFIX)
_DNS_SUBDOMAIN: Final = re.compile(schema.DNS_SUBDOMAIN)
_CONFIGMAP_KEY: Final = re.compile(schema.CONFIGMAP_KEY)
_IPV6: Final = re.compile(schema.IPV6_HOST)
_LABEL_KEY: Final = re.compile(schema.LABEL_KEY)
_LABEL_VALUE: Final = re.compile(schema.LABEL_VALUE)

#: One sentence per rule, shared by the CRD's CEL validations and :func:`parse_store`.
RULES: Final = {
    "sentinel_endpoints": 'sentinel mode needs at least one sentinel "host:port" in endpoints',
    "cluster_db": "cluster mode has only database 0: leave db unset or set it to 0",
    "cluster_nodes": 'cluster mode needs endpoints (a list of "host:port") or a host',
    "standard_host": "standard mode needs a host",
    "standard_endpoints": "endpoints are only used in cluster and sentinel modes",
    "sentinel_service": "sentinelService is only used in sentinel mode",
    "endpoint": 'each endpoint must be "host:port" with a port from 1 to 65535',
    "host_scheme": "host must be a host name or IP address without a scheme (no ://)",
    "key_prefix": "keyPrefix must be alphanumeric (letters and digits only)",
    "tls_refs": "caSecretRef and clientCertSecretRef need tls.enabled: true",
    "username_password": "username needs passwordSecretRef (Rasa expects both or neither)",
    "configmap_format": "configMap.key endpoints.yml or integrations.yml must match "
    "configMap.format (endpoints.yml with format endpoints, integrations.yml with format "
    "integrations): Rasa reads the sections only from the file of its format",
    "configmap_base": "configMap.base.name must name another ConfigMap than configMap.name: "
    "the ConfigMap the operator composes is its own, and a base inside it would be rewritten "
    "by whoever applies either",
    "configmap_base_key": "configMap.base.key must be a ConfigMap key: letters, digits, '-', "
    "'_' and '.', but not '.' or '..'",
    "configmap_key": "configMap.key must be a ConfigMap key: letters, digits, '-', '_' and '.', "
    "but not '.' or '..'",
    "host_port": 'host must not contain a port: set port instead (host: redis, port: 6379); '
    'only an IPv6 address contains ":"',
    "host_space": "host must not contain spaces, tabs or newlines",
    "username_var": "username must not contain ${ (Rasa would expand ${...} from the bot's "
    "environment): give the user name itself",
    "sentinel_auth": "sentinel is only used in sentinel mode (deploymentMode: sentinel)",
    "sentinel_username_password": "sentinel.username needs sentinel.passwordSecretRef (the "
    "sentinels get a user name only with a password)",
    "sentinel_username_var": "sentinel.username must not contain ${ (Rasa would expand ${...} "
    "from the bot's environment): give the user name itself",
    "sentinel_tls": "sentinel.tls needs tls.enabled: true (the sentinels use the same "
    "certificates and verification as the data nodes)",
    "selector_key": "each matchExpressions entry needs a non-empty label key",
    "failover_rasa": "redis.failoverTimeout needs implementation: turnstile (Rasa's stores "
    "have no such setting)",
    "durable_rasa": "durableReplicas needs implementation: turnstile (Rasa's lock stores have "
    "no durable mode)",
    "poll_interval": "pollInterval must be at least 0.05 seconds: each poll is a Redis round "
    "trip per bot replica, and a shorter interval is a busy loop against Redis",
    "socket_timeout": "socketTimeout must be at least 0.1 seconds: below that a healthy Redis "
    "fails ordinary calls (a TLS handshake, a round trip under load)",
    "label_key": "a label key Kubernetes accepts: an optional prefix (a lowercase DNS "
    "subdomain of at most 253 characters) and '/', then a name of 1 to 63 characters of "
    "letters, digits, '-', '_' and '.' that begins and ends with a letter or digit",
    "label_value": "a label value Kubernetes accepts: empty, or at most 63 characters of "
    "letters, digits, '-', '_' and '.' that begin and end with a letter or digit",
    "selector_values": "operators In and NotIn need at least one value in values",
    "selector_no_values": "operators Exists and DoesNotExist take no values",
}


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str


@dataclass(frozen=True)
class TlsSpec:
    enabled: bool = False
    #: The CA bundle that signs the Redis servers' certificates.
    ca: SecretKeyRef | None = None
    #: A ``kubernetes.io/tls`` Secret (``tls.crt`` + ``tls.key``) for client authentication.
    client_cert_secret: str | None = None
    #: Verify the server's certificate (``verify: false`` renders ``ssl_cert_reqs: none``).
    verify: bool = True
    #: Check the certificate's host name (``checkHostname: false``: ``ssl_check_hostname``).
    check_hostname: bool = True


@dataclass(frozen=True)
class SentinelSpec:
    """``spec.redis.sentinel``: the sentinels' own credentials and TLS (sentinel mode only)."""

    username: str | None = None
    password: SecretKeyRef | None = None
    #: TLS to the sentinels, with the data nodes' certificates (renders ``sentinel_use_ssl``).
    tls: bool = False


@dataclass(frozen=True)
class RedisSpec:
    deployment_mode: DeploymentMode = "standard"
    host: str | None = None
    port: int = DEFAULT_PORT
    endpoints: tuple[str, ...] = ()
    sentinel_service: str | None = None
    db: int | None = None
    key_prefix: str | None = None
    socket_timeout: float | None = None
    failover_timeout: float | None = None
    username: str | None = None
    password: SecretKeyRef | None = None
    tls: TlsSpec = TlsSpec()
    sentinel: SentinelSpec = SentinelSpec()


@dataclass(frozen=True, order=True)
class BaseRef:
    """``spec.configMap.base``: the ConfigMap key that holds the user's own sections. With it
    the operator composes the whole file (that text, every store's section merged in)."""

    name: str
    key: str

    def __str__(self) -> str:
        return f"ConfigMap {self.name} key {self.key}"


@dataclass(frozen=True)
class ConfigMapRef:
    name: str
    key: str = DEFAULT_CONFIGMAP_KEY
    format: ConfigFormat = "endpoints"
    base: BaseRef | None = None


def configmap_key(raw: Mapping[str, Any] | None) -> str:
    """The key a raw ``spec.configMap`` (or ``status.configMap``) names: ``key``, else the
    default of its ``format`` (for readers that must not fail on a spec being fixed)."""
    raw = raw if isinstance(raw, Mapping) else {}
    key = raw.get("key")
    if isinstance(key, str) and key:
        return key
    return FORMAT_KEYS.get(str(raw.get("format")), DEFAULT_CONFIGMAP_KEY)


def configmap_base_name(raw: Mapping[str, Any] | None) -> str | None:
    """The ConfigMap a raw ``spec.configMap`` names as its ``base``, if any (for event
    filters, which must not fail on a spec being fixed)."""
    raw = raw if isinstance(raw, Mapping) else {}
    base = raw.get("base")
    name = base.get("name") if isinstance(base, Mapping) else None
    return name if isinstance(name, str) and name else None


@dataclass(frozen=True)
class StoreSpec:
    """One LockStore or TimerStore, checked."""

    kind: str
    namespace: str
    name: str
    redis: RedisSpec
    implementation: Implementation = "turnstile"
    config_map: ConfigMapRef | None = None
    #: ``lockLifetime`` seconds (LockStore only).
    lock_lifetime: int | None = None
    #: ``pollInterval`` seconds (TimerStore only).
    poll_interval: float | None = None
    #: ``transition.durationSeconds`` (LockStore only; ``None`` for a TimerStore).
    transition_seconds: int | None = None
    #: ``durableReplicas`` (LockStore only): replicas that acknowledge a turn; None or 0 is off.
    durable_replicas: int | None = None
    uid: str = ""
    generation: int = 0

    @property
    def info(self) -> KindInfo:
        return KINDS[self.kind]

    @property
    def db(self) -> int:
        """The database the bots use: ``spec.redis.db``, else what the rendered ``type``
        defaults to (lock stores 1, timer stores 2; cluster mode has only 0). The probe uses
        the same, or a store would be Ready on a database no bot touches."""
        if self.redis.deployment_mode == "cluster":
            return 0
        if self.redis.db is not None:
            return self.redis.db
        info = self.info
        kind = info.turnstile_type if self.implementation == "turnstile" else info.rasa_type
        return default_db(info.section, kind)

    @property
    def ref(self) -> str:
        """``Kind namespace/name``, for messages."""
        return f"{self.kind} {self.namespace}/{self.name}"


class _Fields:
    """Reads one mapping of a spec, naming ``spec.path.field`` in every error."""

    def __init__(self, values: Any, path: str) -> None:
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            raise SpecError(path, "an object", values)
        self.values = values
        self.path = path

    def name(self, key: str) -> str:
        return f"{self.path}.{key}"

    def sub(self, key: str) -> _Fields:
        return _Fields(self.values.get(key), self.name(key))

    def has(self, key: str) -> bool:
        return self.values.get(key) is not None

    def string(self, key: str, *, default: str | None = None) -> str | None:
        value = self.values.get(key)
        if value is None or value == "":
            return default
        if not isinstance(value, str):
            raise SpecError(self.name(key), "a string", value)
        return value

    def choice(self, key: str, options: tuple[str, ...], default: str) -> str:
        value = self.string(key, default=default)
        if value not in options:
            raise SpecError(self.name(key), "one of " + ", ".join(options), value)
        return value

    def integer(self, key: str, *, minimum: int, maximum: int | None = None) -> int | None:
        value = self.values.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(self.name(key), "an integer", value)
        if value < minimum or (maximum is not None and value > maximum):
            top = f" to {maximum}" if maximum is not None else " or more"
            raise SpecError(self.name(key), f"an integer from {minimum}{top}", value)
        return value

    def bounded(self, key: str, bounds: schema.Bounds) -> float | None:
        """A number within ``bounds`` (:mod:`~turnstile.operator.model.schema`), or ``None``."""
        if bounds.integer:
            return self.integer(key, minimum=int(bounds.minimum), maximum=int(bounds.maximum))
        return self.number(key, bounds)

    def number(self, key: str, bounds: schema.Bounds) -> float | None:
        value = self.values.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(self.name(key), "a number of seconds", value)
        low, high = bounds.minimum, bounds.maximum
        if bounds.exclusive and not low < value <= high:
            raise SpecError(
                self.name(key), f"a number of seconds above {low:g} and at most {high:g}", value
            )
        if not bounds.exclusive and not low <= value <= high:
            raise SpecError(
                self.name(key), f"a number of seconds from {low:g} to {high:g}", value
            )
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.values.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise SpecError(self.name(key), "true or false", value)
        return value

    def secret_ref(self, key: str, *, default_key: str) -> SecretKeyRef | None:
        if not self.has(key):
            return None
        ref = self.sub(key)
        name = ref.string("name")
        if not name:
            raise SpecError(ref.name("name"), "the name of a Secret in the store's namespace")
        return SecretKeyRef(name=name, key=ref.string("key", default=default_key) or default_key)


def parse_redis(fields: _Fields) -> RedisSpec:
    """``spec.redis``, with every cross-field rule of the CRD (checked in the CRD's order)."""
    mode = cast(DeploymentMode, fields.choice("deploymentMode", DEPLOYMENT_MODES, "standard"))
    host = fields.string("host")
    if host is not None and "://" in host:
        raise SpecError(fields.name("host"), RULES["host_scheme"], host)
    if host is not None and any(c.isspace() for c in host):
        raise SpecError(fields.name("host"), RULES["host_space"], host)
    if host is not None and ":" in host and not _IPV6.match(host):
        raise SpecError(fields.name("host"), RULES["host_port"], host)
    port = _int(fields.bounded("port", schema.PORT)) or DEFAULT_PORT
    endpoints = _endpoints(fields)
    db = _int(fields.bounded("db", schema.DB))
    prefix = fields.string("keyPrefix")
    if prefix is not None and not _KEY_PREFIX.match(prefix):
        raise SpecError(fields.name("keyPrefix"), RULES["key_prefix"], prefix)
    service = fields.string("sentinelService")
    _check_mode(fields, mode, host=host, endpoints=endpoints, db=db, service=service)
    password = fields.secret_ref("passwordSecretRef", default_key="password")
    username = fields.string("username")
    if username is not None and "${" in username:
        raise SpecError(fields.name("username"), RULES["username_var"], username)
    if username is not None and password is None:
        raise SpecError(fields.name("username"), RULES["username_password"], username)
    tls = _tls(fields.sub("tls"))
    sentinel = _sentinel(fields, mode, tls)
    return RedisSpec(
        deployment_mode=mode,
        host=host,
        port=port,
        endpoints=tuple(endpoints),
        sentinel_service=service or (DEFAULT_SENTINEL_SERVICE if mode == "sentinel" else None),
        db=db,
        key_prefix=prefix,
        socket_timeout=fields.bounded("socketTimeout", schema.SOCKET_TIMEOUT),
        failover_timeout=fields.bounded("failoverTimeout", schema.FAILOVER_TIMEOUT),
        username=username,
        password=password,
        tls=tls,
        sentinel=sentinel,
    )


def _endpoints(fields: _Fields) -> list[str]:
    raw_endpoints = fields.values.get("endpoints") or []
    if not isinstance(raw_endpoints, list):
        raise SpecError(fields.name("endpoints"), 'a list of "host:port" strings', raw_endpoints)
    endpoints: list[str] = []
    for index, item in enumerate(raw_endpoints):
        try:
            parse_address(item, key=f"{fields.name('endpoints')}[{index}]")
        except ConfigurationError:
            raise SpecError(
                f"{fields.name('endpoints')}[{index}]", RULES["endpoint"], item
            ) from None
        endpoints.append(item.strip())
    return endpoints


def _check_mode(
    fields: _Fields,
    mode: DeploymentMode,
    *,
    host: str | None,
    endpoints: list[str],
    db: int | None,
    service: str | None,
) -> None:
    """The rules that tie ``deploymentMode`` to the other connection fields."""
    if mode == "sentinel" and not endpoints:
        raise SpecError(fields.name("endpoints"), RULES["sentinel_endpoints"], [])
    if mode == "cluster" and db:
        raise SpecError(fields.name("db"), RULES["cluster_db"], db)
    if mode == "cluster" and not endpoints and not host:
        raise SpecError(fields.name("endpoints"), RULES["cluster_nodes"], [])
    if mode == "standard" and not host:
        raise SpecError(fields.name("host"), RULES["standard_host"])
    if mode == "standard" and endpoints:
        raise SpecError(fields.name("endpoints"), RULES["standard_endpoints"], endpoints)
    if mode != "sentinel" and service is not None:
        raise SpecError(fields.name("sentinelService"), RULES["sentinel_service"], service)


def _tls(tls_fields: _Fields) -> TlsSpec:
    enabled = tls_fields.boolean("enabled", False)
    ca = tls_fields.secret_ref("caSecretRef", default_key="ca.crt")
    client = tls_fields.sub("clientCertSecretRef")
    client_name = client.string("name") if tls_fields.has("clientCertSecretRef") else None
    if tls_fields.has("clientCertSecretRef") and not client_name:
        raise SpecError(client.name("name"), "the name of a kubernetes.io/tls Secret")
    if (ca is not None or client_name is not None) and not enabled:
        raise SpecError(tls_fields.name("enabled"), RULES["tls_refs"], enabled)
    return TlsSpec(
        enabled=enabled,
        ca=ca,
        client_cert_secret=client_name,
        verify=tls_fields.boolean("verify", True),
        check_hostname=tls_fields.boolean("checkHostname", True),
    )


def _sentinel(fields: _Fields, mode: DeploymentMode, tls: TlsSpec) -> SentinelSpec:
    """``spec.redis.sentinel``, with the CRD's rules (in its order)."""
    if not fields.has("sentinel"):
        return SentinelSpec()
    if mode != "sentinel":
        raise SpecError(fields.name("sentinel"), RULES["sentinel_auth"], mode)
    sub = fields.sub("sentinel")
    username = sub.string("username")
    if username is not None and "${" in username:
        raise SpecError(sub.name("username"), RULES["sentinel_username_var"], username)
    password = sub.secret_ref("passwordSecretRef", default_key="password")
    if username is not None and password is None:
        raise SpecError(sub.name("username"), RULES["sentinel_username_password"], username)
    use_tls = sub.boolean("tls", False)
    if use_tls and not tls.enabled:
        raise SpecError(sub.name("tls"), RULES["sentinel_tls"], use_tls)
    return SentinelSpec(username=username, password=password, tls=use_tls)


def parse_spec(kind: str, spec: Any, *, namespace: str = "", name: str = "") -> StoreSpec:
    """A raw ``spec`` of ``kind`` to a :class:`StoreSpec`, or a :class:`SpecError`."""
    info = KINDS.get(kind)
    if info is None:
        raise SpecError("kind", "LockStore or TimerStore", kind)
    fields = _Fields(spec, "spec")
    if not fields.has("redis"):
        raise SpecError("spec.redis", "the Redis connection settings (an object)")
    redis = parse_redis(fields.sub("redis"))
    implementation = cast(
        Implementation, fields.choice("implementation", IMPLEMENTATIONS, "turnstile")
    )
    if redis.failover_timeout is not None and implementation == "rasa":
        raise SpecError("spec.redis.failoverTimeout", RULES["failover_rasa"],
                        redis.failover_timeout)  # fmt: skip
    config_map: ConfigMapRef | None = None
    if fields.has("configMap"):
        cm = fields.sub("configMap")
        cm_name = cm.string("name")
        if not cm_name or len(cm_name) > schema.NAME_MAX or not _DNS_SUBDOMAIN.match(cm_name):
            raise SpecError(
                cm.name("name"), "a ConfigMap name (lowercase DNS subdomain)", cm_name
            )
        fmt = cast(ConfigFormat, cm.choice("format", CONFIG_FORMATS, "endpoints"))
        cm_key = cm.string("key", default=FORMAT_KEYS[fmt]) or FORMAT_KEYS[fmt]
        if (
            len(cm_key) > schema.NAME_MAX
            or not _CONFIGMAP_KEY.match(cm_key)
            or cm_key in (".", "..")
        ):
            raise SpecError(cm.name("key"), RULES["configmap_key"], cm_key)
        if cm_key in FORMAT_KEYS.values() and cm_key != FORMAT_KEYS[fmt]:
            raise SpecError(cm.name("key"), RULES["configmap_format"], cm_key)
        config_map = ConfigMapRef(
            name=cm_name, key=cm_key, format=fmt, base=_base(cm, cm_name, cm_key)
        )
    is_lock = info is LOCK_STORE
    lock_lifetime = _int(fields.bounded("lockLifetime", schema.LOCK_LIFETIME)) if is_lock else None
    poll_interval = None if is_lock else fields.bounded("pollInterval", schema.POLL_INTERVAL)
    transition_seconds: int | None = None
    durable_replicas: int | None = None
    if is_lock:
        durable_replicas = _int(fields.bounded("durableReplicas", schema.DURABLE_REPLICAS))
        if durable_replicas and implementation == "rasa":
            raise SpecError(fields.name("durableReplicas"), RULES["durable_rasa"],
                            durable_replicas)
        transition_seconds = schema.TRANSITION_DURATION_DEFAULT
        if fields.has("transition"):
            duration = fields.sub("transition").bounded(
                "durationSeconds", schema.TRANSITION_DURATION
            )
            if duration is not None:
                transition_seconds = int(duration)
    return StoreSpec(
        kind=info.kind,
        namespace=namespace,
        name=name,
        redis=redis,
        implementation=implementation,
        config_map=config_map,
        lock_lifetime=lock_lifetime,
        poll_interval=poll_interval,
        transition_seconds=transition_seconds,
        durable_replicas=durable_replicas,
    )


def check_label_key(path: str, key: object) -> str:
    """``key`` if Kubernetes would accept it as a label key, else a :class:`SpecError`."""
    if (
        not isinstance(key, str)
        or len(key) > schema.LABEL_KEY_MAX
        or not _LABEL_KEY.match(key)
        or len(key.rpartition("/")[0]) > schema.LABEL_PREFIX_MAX
    ):
        raise SpecError(path, RULES["label_key"], key)
    return key


def check_label_value(path: str, value: object) -> str:
    """``value`` if Kubernetes would accept it as a label value, else a :class:`SpecError`."""
    if (
        not isinstance(value, str)
        or len(value) > schema.LABEL_VALUE_MAX
        or not _LABEL_VALUE.match(value)
    ):
        raise SpecError(path, RULES["label_value"], value)
    return value


def _base(cm: _Fields, target_name: str, target_key: str) -> BaseRef | None:
    """``configMap.base``: a ConfigMap name (not the target's) and a key (default: the
    target's key)."""
    if not cm.has("base"):
        return None
    base = cm.sub("base")
    name = base.string("name")
    if not name or len(name) > schema.NAME_MAX or not _DNS_SUBDOMAIN.match(name):
        raise SpecError(base.name("name"), "a ConfigMap name (lowercase DNS subdomain)", name)
    if name == target_name:
        raise SpecError(base.name("name"), RULES["configmap_base"], name)
    key = base.string("key", default=target_key) or target_key
    if len(key) > schema.NAME_MAX or not _CONFIGMAP_KEY.match(key) or key in (".", ".."):
        raise SpecError(base.name("key"), RULES["configmap_base_key"], key)
    return BaseRef(name=name, key=key)


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def parse_store(body: Mapping[str, Any]) -> StoreSpec:
    """A whole LockStore/TimerStore object (as the API or a manifest holds it)."""
    kind = str(body.get("kind", ""))
    meta = body.get("metadata") or {}
    store = parse_spec(
        kind,
        body.get("spec"),
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name") or ""),
    )
    generation = meta.get("generation")
    return replace(
        store,
        uid=str(meta.get("uid") or ""),
        generation=generation if isinstance(generation, int) else 0,
    )
