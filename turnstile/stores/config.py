"""Store settings, read from the keys Rasa passes in ``endpoints.yml``.

Rasa hands a custom store its ``endpoints.yml`` section as ``endpoint_config.kwargs``: a plain
mapping whose values may be strings even where a number is meant (``port: ${REDIS_PORT}`` is
expanded to ``"6379"``). :class:`SettingsReader` is the one typed helper that turns such a
mapping into checked values; :class:`RedisSettings` is the result for the Redis connection that
the lock store, the timer store, the operator's probe and ``turnstile check`` all share.

Every bad value raises :class:`~turnstile.stores.errors.ConfigurationError` naming the key, the
value and what is accepted, at construction time, before anything connects. Passwords are kept
out of ``repr()`` and out of every message.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, cast

from turnstile.stores.errors import ConfigurationError

logger = logging.getLogger(__name__)
#: The weak-TLS settings already warned about (see ``RedisSettings.warn_weak_tls``).
_WARNED_TLS: set[tuple[str, str, str, bool]] = set()

DeploymentMode = Literal["standard", "cluster", "sentinel"]
DEPLOYMENT_MODES: Final[tuple[DeploymentMode, ...]] = ("standard", "cluster", "sentinel")
#: redis-py's ``ssl_cert_reqs`` values: ``required`` (the default, as in redis-py and Rasa)
#: verifies the server's certificate; ``optional`` and ``none`` do not insist on it.
CertReqs = Literal["required", "optional", "none"]
CERT_REQS: Final[tuple[CertReqs, ...]] = ("required", "optional", "none")
#: ``failover_timeout``'s default, seconds (see :attr:`RedisSettings.failover_timeout`).
FAILOVER_TIMEOUT: Final = 60.0

_TRUE: Final = frozenset({"true", "yes", "on", "1"})
_FALSE: Final = frozenset({"false", "no", "off", "0", ""})
_ALNUM: Final = re.compile(r"^[A-Za-z0-9]+$")
_HOSTNAME: Final = re.compile(
    r"^[A-Za-z0-9_.\-]+$"  # a name or an IPv4 address
    r"|^\[[0-9A-Fa-f:.]+\]$"  # a bracketed IPv6 address
)

#: The keys every Redis-backed store understands (Rasa's names).
REDIS_KEYS: Final = frozenset(
    {
        "url",
        "host",
        "port",
        "db",
        "username",
        "password",
        "password_file",
        "use_ssl",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_ca_certs",
        "ssl_cert_reqs",
        "ssl_check_hostname",
        "key_prefix",
        "socket_timeout",
        "deployment_mode",
        "endpoints",
        "sentinel_service",
        "sentinel_username",
        "sentinel_password",
        "sentinel_use_ssl",
        "failover_timeout",
    }
)
#: The keys of a ``lock_store`` in transition from the store it replaces (``locks.transition``).
TRANSITION_KEYS: Final = frozenset({"transition_from", "transition_until"})
#: The ``db`` a store uses when its section gives none, as the class its ``type`` names defaults
#: it: Turnstile's and Rasa's ``concurrent_redis`` lock stores 1, Rasa Pro 3.21's ``redis`` lock
#: store 0 (its ``RedisLockStoreConfig``), every timer store 2.
_DEFAULT_DBS: Final = {"lock_store": 1, "timer_store": 2}
_TYPE_DBS: Final = {("lock_store", "redis"): 0}


def default_db(section: str, store_type: str | None = None) -> int:
    """The database a ``lock_store`` or ``timer_store`` section of ``type`` uses without ``db``."""
    return _TYPE_DBS.get((section, store_type or ""), _DEFAULT_DBS.get(section, 1))


#: Keys Rasa itself may leave in ``kwargs``; never an error.
_RASA_KEYS: Final = frozenset({"type", "store_type"})


class SettingsReader:
    """Reads typed values from one ``endpoints.yml`` section, naming ``section.key`` in errors."""

    def __init__(self, values: Mapping[str, Any] | None, *, section: str) -> None:
        self._values: dict[str, Any] = dict(values or {})
        self._section = section
        self._read: set[str] = set()

    def name(self, key: str) -> str:
        """``section.key``, as error messages spell it."""
        return f"{self._section}.{key}" if self._section else key

    def _get(self, key: str) -> Any:
        self._read.add(key)
        return self._values.get(key)

    def string(self, key: str, default: str | None = None) -> str | None:
        value = self._get(key)
        if value is None or value == "":
            return default
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)
        raise ConfigurationError(self.name(key), value, "a string")

    def secret(self, key: str) -> str | None:
        value = self._get(key)
        if value is None or value == "":
            return None
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)
        raise ConfigurationError(self.name(key), value, "a string", secret=True)

    def integer(
        self, key: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        value = self._get(key)
        if value is None or value == "":
            return default
        accepted = _range_text("an integer", minimum, maximum)
        try:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            number = int(str(value).strip()) if isinstance(value, str) else int(value)
        except (TypeError, ValueError):
            raise ConfigurationError(self.name(key), value, accepted) from None
        if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            raise ConfigurationError(self.name(key), value, accepted)
        return number

    def number(
        self, key: str, default: float, *, minimum: float | None = None, exclusive_min: bool = False
    ) -> float:
        value = self._get(key)
        if value is None or value == "":
            return default
        accepted = "a number" if minimum is None else (
            f"a number {'>' if exclusive_min else '>='} {minimum:g}"
        )
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(str(value).strip()) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            raise ConfigurationError(self.name(key), value, accepted) from None
        if not math.isfinite(number):
            raise ConfigurationError(self.name(key), value, accepted)
        if minimum is not None and (number < minimum or (exclusive_min and number == minimum)):
            raise ConfigurationError(self.name(key), value, accepted)
        return number

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigurationError(self.name(key), value, "true or false")

    def choice(self, key: str, default: str, choices: Iterable[str]) -> str:
        options = tuple(choices)
        value = self._get(key)
        if value is None or value == "":
            return default
        text = str(value).strip().lower() if isinstance(value, str) else value
        if text not in options:
            raise ConfigurationError(self.name(key), value, "one of " + ", ".join(options))
        return cast(str, text)

    def addresses(self, key: str) -> tuple[tuple[str, int], ...]:
        """A list of ``host:port`` strings, or one comma-separated string (from ``${VAR}``)."""
        value = self._get(key)
        if value is None or value == "":
            return ()
        items: list[Any]
        if isinstance(value, str):
            items = [part for part in (p.strip() for p in value.split(",")) if part]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise ConfigurationError(self.name(key), value, 'a list of "host:port" strings')
        return tuple(parse_address(item, key=self.name(key)) for item in items)

    def unknown(self, known: Iterable[str]) -> list[str]:
        """Keys in the section that no reader asked for and that are not in ``known``."""
        allowed = set(known) | _RASA_KEYS | self._read
        return sorted(k for k in self._values if k not in allowed)


def parse_address(item: Any, *, key: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` to ``(host, port)``, or a ConfigurationError."""
    expected = 'a "host:port" string with a port from 1 to 65535'
    if not isinstance(item, str):
        raise ConfigurationError(key, item, expected)
    text = item.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ConfigurationError(key, item, expected)
    port = int(port_text)
    if not 1 <= port <= 65535 or not _HOSTNAME.match(host):
        raise ConfigurationError(key, item, expected)
    return host.strip("[]"), port


def _range_text(kind: str, minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f"{kind} from {minimum} to {maximum}"
    if minimum is not None:
        return f"{kind} >= {minimum}"
    if maximum is not None:
        return f"{kind} <= {maximum}"
    return kind


@dataclass(frozen=True)
class RedisSettings:
    """How to reach Redis in one of the three deployment modes."""

    deployment_mode: DeploymentMode = "standard"
    host: str = "localhost"
    port: int = 6379
    db: int = 1
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: A file holding the password (a mounted Secret), read again whenever it changes.
    password_file: str | None = None
    use_ssl: bool = False
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_ca_certs: str | None = None
    #: Verify the server's certificate: against ``ssl_ca_certs`` when given, else against the
    #: system trust store (redis-py's and Rasa's default). ``none`` is an explicit opt-out.
    ssl_cert_reqs: CertReqs = "required"
    #: Check that the certificate names the host connected to (redis-py's default, True).
    ssl_check_hostname: bool = True
    key_prefix: str | None = None
    socket_timeout: float = 10.0
    endpoints: tuple[tuple[str, int], ...] = ()
    sentinel_service: str = "mymaster"
    #: Credentials for the sentinels themselves (their ``requirepass`` or an ACL user), apart
    #: from the data nodes' ``username``/``password``. Rasa 3.21 has no such keys.
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    #: TLS to the sentinels, with the same ``ssl_*`` files and verification as the data nodes.
    sentinel_use_ssl: bool = False
    #: How long an operation keeps retrying through a failover before it gives up. 60 s covers
    #: a failover under the servers' own defaults: Sentinel's ``down-after-milliseconds`` (30 s)
    #: plus its election, a Cluster's ``cluster-node-timeout`` (15 s) plus the replica's
    #: promotion, with room for attempts sent to a master that vanished to wait out
    #: ``socket_timeout`` first. In Rasa a lock call that gives up drops the user's message.
    failover_timeout: float = FAILOVER_TIMEOUT

    @classmethod
    def read(
        cls,
        reader: SettingsReader,
        *,
        default_db: int = 1,
        url: str | None = None,
    ) -> RedisSettings:
        """Read the Redis keys of one section; ``url`` is Rasa's ``endpoint_config.url``."""
        mode = cast(
            DeploymentMode, reader.choice("deployment_mode", "standard", DEPLOYMENT_MODES)
        )
        host = reader.string("host") or reader.string("url") or url or "localhost"
        if "://" in host:
            raise ConfigurationError(
                reader.name("host"), host, "a host name or IP address without a scheme"
            )
        prefix = reader.string("key_prefix")
        if prefix is not None and not _ALNUM.match(prefix):
            raise ConfigurationError(
                reader.name("key_prefix"), prefix, "letters and digits only (alphanumeric)"
            )
        endpoints = reader.addresses("endpoints")
        if mode == "sentinel" and not endpoints:
            raise ConfigurationError(
                reader.name("endpoints"),
                [],
                'sentinel mode needs at least one sentinel "host:port"',
            )
        settings = cls(
            deployment_mode=mode,
            host=host,
            port=reader.integer("port", 6379, minimum=1, maximum=65535),
            db=reader.integer("db", default_db, minimum=0),
            username=reader.string("username"),
            password=reader.secret("password"),
            password_file=_password_file(reader),
            use_ssl=reader.boolean("use_ssl", False),
            ssl_certfile=reader.string("ssl_certfile"),
            ssl_keyfile=reader.string("ssl_keyfile"),
            ssl_ca_certs=reader.string("ssl_ca_certs"),
            ssl_cert_reqs=cast(
                CertReqs, reader.choice("ssl_cert_reqs", "required", CERT_REQS)
            ),
            ssl_check_hostname=reader.boolean("ssl_check_hostname", True),
            key_prefix=prefix,
            socket_timeout=reader.number("socket_timeout", 10.0, minimum=0, exclusive_min=True),
            endpoints=endpoints,
            sentinel_service=reader.string("sentinel_service", "mymaster") or "mymaster",
            sentinel_username=reader.string("sentinel_username"),
            sentinel_password=reader.secret("sentinel_password"),
            sentinel_use_ssl=reader.boolean("sentinel_use_ssl", False),
            failover_timeout=reader.number("failover_timeout", FAILOVER_TIMEOUT, minimum=0),
        )
        if settings.deployment_mode == "cluster" and not settings.endpoints:
            settings = replace(settings, endpoints=((settings.host, settings.port),))
        settings.warn_weak_tls(reader.name(""))
        return settings

    def tls_kwargs(self) -> dict[str, Any]:
        """redis-py's TLS keyword arguments for these settings (both TLS uses share them)."""
        return {
            "ssl": True,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
            "ssl_ca_certs": self.ssl_ca_certs,
            "ssl_cert_reqs": self.ssl_cert_reqs,
            "ssl_check_hostname": self.verifies_hostname,
        }

    def sentinel_kwargs(self) -> dict[str, Any]:
        """redis-py keyword arguments for a connection to a sentinel (not a data node)."""
        timeout = min(self.socket_timeout, 2.0)
        kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        if self.sentinel_password is not None:
            kwargs.update(username=self.sentinel_username, password=self.sentinel_password)
        if self.sentinel_use_ssl:
            kwargs.update(self.tls_kwargs())
        return kwargs

    @property
    def verifies_server(self) -> bool:
        """Whether TLS insists on a certificate that the trust store (or CA file) vouches for."""
        return self.ssl_cert_reqs == "required"

    @property
    def verifies_hostname(self) -> bool:
        """Whether TLS checks the certificate's name (never without a verified certificate)."""
        return self.ssl_check_hostname and self.ssl_cert_reqs != "none"

    def warn_weak_tls(self, section: str = "") -> None:
        """Log a warning when TLS is on but does not fully verify the server.

        Once per process for each store and server: the operator reads the same settings at
        every re-check, and one line says it as well as a thousand.
        """
        where = section.rstrip(".") or "Redis store"
        seen = (where, self.where, self.ssl_cert_reqs, self.ssl_check_hostname)
        if seen in _WARNED_TLS:
            return
        _WARNED_TLS.add(seen)
        if (self.use_ssl or self.sentinel_use_ssl) and not self.verifies_server:
            logger.warning(
                "%s: ssl_cert_reqs is %r: TLS to Redis (%s) does not verify the server's "
                "certificate, so anyone on the network path can impersonate it",
                where, self.ssl_cert_reqs, self.where,
            )
        elif (self.use_ssl or self.sentinel_use_ssl) and not self.verifies_hostname:
            logger.warning(
                "%s: ssl_check_hostname is false: TLS to Redis (%s) accepts a trusted "
                "certificate issued for any host name",
                where, self.where,
            )

    @property
    def connect_timeout(self) -> float:
        """Seconds to wait for a connection to a data node: ``socket_timeout``, at most 5."""
        return min(self.socket_timeout, 5.0)

    @property
    def where(self) -> str:
        """Where the store points, for messages and logs (never a credential)."""
        if self.deployment_mode == "standard":
            return f"{self.host}:{self.port}/{self.db}"
        nodes = ",".join(f"{h}:{p}" for h, p in self.endpoints)
        if self.deployment_mode == "sentinel":
            return f"sentinel {self.sentinel_service}@{nodes}"
        return f"cluster {nodes}"


def _password_file(reader: SettingsReader) -> str | None:
    path = reader.string("password_file")
    if path is None:
        return None
    if reader.secret("password") is not None:
        raise ConfigurationError(
            reader.name("password_file"), path, "a file path with no password key beside it"
        )
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigurationError(
            reader.name("password_file"), path,
            f"a readable file holding the password ({exc.strerror or exc})",
        ) from None
    return path


def warn_unknown(reader: SettingsReader, known: Iterable[str], *, what: str) -> None:
    """Log keys that no setting reads: most often a typo that would otherwise pass unseen."""
    extra = reader.unknown(known)
    if extra:
        logger.warning("%s: ignoring unknown key(s): %s", what, ", ".join(extra))


# ---- the lock store's durable mode -----------------------------------------------------------

#: ``lock_durable_replicas``: 0 (off) up to this many replicas acknowledging a turn.
MAX_DURABLE_REPLICAS: Final = 16
#: ``lock_durable_timeout`` seconds: how long a turn waits for its acknowledgements at most.
DEFAULT_DURABLE_TIMEOUT: Final = 0.25
MIN_DURABLE_TIMEOUT: Final = 0.001
MAX_DURABLE_TIMEOUT: Final = 10.0
#: The keys :func:`read_durable` reads.
DURABLE_KEYS: Final = frozenset({"lock_durable_replicas", "lock_durable_timeout"})


@dataclass(frozen=True)
class DurableSettings:
    """The lock store's durable mode: the ticket that grants a turn is acknowledged by at least
    ``replicas`` replicas (Redis ``WAIT``) before its holder enters, waiting ``timeout`` seconds
    at most (``docs/locks.md``, "Durable mode")."""

    replicas: int
    timeout: float = DEFAULT_DURABLE_TIMEOUT

    @property
    def timeout_ms(self) -> int:
        return max(int(self.timeout * 1000), 1)


def read_durable(reader: SettingsReader) -> DurableSettings | None:
    """``lock_durable_replicas`` (0 or absent: off) and ``lock_durable_timeout`` of a
    ``lock_store`` section; a bad value names the key, the value and what is accepted."""
    replicas = reader.integer(
        "lock_durable_replicas", 0, minimum=0, maximum=MAX_DURABLE_REPLICAS
    )
    accepted = f"a number of seconds from {MIN_DURABLE_TIMEOUT:g} to {MAX_DURABLE_TIMEOUT:g}"
    try:
        timeout = reader.number("lock_durable_timeout", DEFAULT_DURABLE_TIMEOUT)
    except ConfigurationError as exc:  # one sentence for every bad value, as written
        raise ConfigurationError(exc.key, exc.value, accepted) from None
    if not MIN_DURABLE_TIMEOUT <= timeout <= MAX_DURABLE_TIMEOUT:
        raise ConfigurationError(
            reader.name("lock_durable_timeout"), reader._values["lock_durable_timeout"], accepted
        )
    if replicas == 0:
        return None
    return DurableSettings(replicas, timeout)
