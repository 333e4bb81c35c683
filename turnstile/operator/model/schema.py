"""The bounds and patterns of a store's spec, described once for the CRD and the parser.

:mod:`~turnstile.operator.model.crds` turns each :class:`Bounds` into the OpenAPI
``minimum``/``maximum`` of the CRD and each pattern into its ``pattern`` (or CEL rule);
:mod:`~turnstile.operator.model.specs` checks the same values with the same limits, so a spec
that slipped past the API server (an older CRD, ``turnstile render`` offline) meets the same
rules. The cross-field rules share their sentences the same way (``specs.RULES``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from turnstile.stores.config import MAX_DURABLE_REPLICAS


@dataclass(frozen=True)
class Bounds:
    """A numeric field's range: ``minimum <= value <= maximum`` (``minimum < value`` if
    ``exclusive``); ``integer`` fields refuse fractions."""

    minimum: float
    maximum: float
    integer: bool
    exclusive: bool = False

    def schema(self) -> dict[str, Any]:
        """The OpenAPI fragment of the CRD (type and bounds; the caller adds the rest)."""
        if self.integer:
            return {"type": "integer", "minimum": int(self.minimum), "maximum": int(self.maximum)}
        out: dict[str, Any] = {"type": "number", "minimum": _number(self.minimum)}
        if self.exclusive:
            out["exclusiveMinimum"] = True
        out["maximum"] = _number(self.maximum)
        return out


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


PORT: Final = Bounds(1, 65535, integer=True)
DB: Final = Bounds(0, 1023, integer=True)
#: ``socketTimeout`` seconds: at least 0.1. Below that a healthy Redis fails ordinary calls: a
#: TLS handshake, a cross-zone round trip under load, a fork for a snapshot or a slow command
#: each take tens of milliseconds, and the store then reports a host that "drops packets".
#: Rasa's default is 10; 0.1 is already a hundred times a LAN round trip.
SOCKET_TIMEOUT: Final = Bounds(0.1, 300, integer=False)
#: ``failoverTimeout`` seconds: how long a call retries through a failover (Turnstile's stores;
#: the library's default is 60, which covers Sentinel's and Cluster's default detection). 0 is
#: no retry at all; at most 10 minutes.
FAILOVER_TIMEOUT: Final = Bounds(0, 600, integer=False)
#: ``lockLifetime`` seconds (LockStore).
LOCK_LIFETIME: Final = Bounds(1, 86400, integer=True)
#: ``durableReplicas`` (LockStore): replicas that acknowledge a turn (``WAIT``); 0 is off.
DURABLE_REPLICAS: Final = Bounds(0, MAX_DURABLE_REPLICAS, integer=True)
#: ``pollInterval`` seconds (TimerStore). At least 0.05 s: each poll is a Redis round trip
#: per bot replica, so 20 polls a second is already far finer than any timer needs, and a
#: value like 1e-05 would be a busy loop against Redis.
POLL_INTERVAL: Final = Bounds(0.05, 60, integer=False)
#: ``transition.durationSeconds`` (LockStore): how long a change of where locks live renders
#: the previous section next to the new one. 0 switches at once; at most a day.
TRANSITION_DURATION: Final = Bounds(0, 86400, integer=True)
#: Its default: a Deployment's default ``progressDeadlineSeconds``.
TRANSITION_DURATION_DEFAULT: Final = 600

#: ``keyPrefix``: letters and digits.
KEY_PREFIX: Final = r"^[A-Za-z0-9]+$"
#: A ConfigMap name: a lowercase RFC 1123 DNS subdomain.
DNS_SUBDOMAIN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: A ConfigMap key.
CONFIGMAP_KEY: Final = r"^[-._a-zA-Z0-9]+$"
#: A ``host`` that contains ":" must be an IPv6 address (two colons at least, hex digits).
IPV6_HOST: Final = r"^[0-9A-Fa-f.]*:[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*$"
#: A label name (a label key's part after the "/"): 1 to 63 characters, letters and digits at
#: both ends, '-', '_' and '.' inside (the length is in the pattern, so CEL checks it too).
LABEL_NAME: Final = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
#: A label key's optional prefix: a lowercase DNS subdomain of at most 253 characters.
LABEL_PREFIX: Final = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
LABEL_PREFIX_MAX: Final = 253
#: A whole label key, as Kubernetes checks it (the prefix length apart).
LABEL_KEY: Final = "^(" + LABEL_PREFIX + "/)?" + LABEL_NAME + "$"
#: A label value: empty, or a label name.
LABEL_VALUE: Final = "^(" + LABEL_NAME + ")?$"
LABEL_VALUE_MAX: Final = 63
#: Longest label key: prefix, "/", name.
LABEL_KEY_MAX: Final = LABEL_PREFIX_MAX + 1 + 63
#: Longest ConfigMap name and key.
NAME_MAX: Final = 253
