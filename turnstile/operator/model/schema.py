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
#: ``socketTimeout`` seconds.
SOCKET_TIMEOUT: Final = Bounds(0, 300, integer=False, exclusive=True)
#: ``lockLifetime`` seconds (LockStore).
LOCK_LIFETIME: Final = Bounds(1, 86400, integer=True)
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
#: Longest ConfigMap name and key.
NAME_MAX: Final = 253
