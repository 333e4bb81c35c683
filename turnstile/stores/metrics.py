"""Lock and timer metrics from bot pods, through ``prometheus_client`` or OpenTelemetry.

The store library has no required dependency beyond redis-py, so metrics are optional twice
over: they need ``prometheus_client`` (``pip install 'rasa-turnstile[metrics]'``) or the
OpenTelemetry metrics API (``rasa-turnstile[otel]``, see ``turnstile.stores.otel``) and can be
turned off. The choice is made once per process, from the environment, when the first store is
built:

* ``TURNSTILE_METRICS``: ``auto`` (the default: Prometheus when ``prometheus_client`` imports,
  else OpenTelemetry when ``opentelemetry-api`` imports, else off), ``prometheus`` or ``otel``
  (an error if it does not import) or ``off``. With OpenTelemetry the application configures
  the SDK and its exporters; ``TURNSTILE_METRICS_PORT`` is for Prometheus only.
* ``TURNSTILE_METRICS_PORT``: Rasa serves no ``/metrics``, so a port here makes the first store
  of the process start ``prometheus_client``'s HTTP server on it, once, on
  ``TURNSTILE_METRICS_ADDR`` (default ``0.0.0.0``, what a pod's scrape needs). Unset: the series
  go to ``prometheus_client``'s default registry, for a host program that already serves it.

The one idea: **every store binds its series once**. A store asks for its recorder when it is
first used (:func:`lock_recorder`, :func:`timer_recorder`, :func:`connection_recorder`) and gets
an object whose labelled children are already looked up, so a lock cycle pays a method call and
an observation per event (about 1.3 µs per cycle in all, see :class:`_HotHistogram`), never a
label lookup. With metrics off the recorders are no-op classes with the same methods. Labels
are few and bounded: the store kind (``memory``/``redis``), the deployment mode, the Redis
client's name; never a conversation id. ``docs/metrics.md`` lists every series.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any, Final, Protocol

from turnstile.stores.errors import ConfigurationError

logger = logging.getLogger(__name__)

METRICS_ENV: Final = "TURNSTILE_METRICS"
PORT_ENV: Final = "TURNSTILE_METRICS_PORT"
ADDR_ENV: Final = "TURNSTILE_METRICS_ADDR"
BACKENDS: Final = ("auto", "prometheus", "otel", "off")

#: Lock waits and holds: a cycle with nobody waiting is well under a millisecond; a wait behind
#: an LLM call is tens of seconds; ``lock_lifetime`` defaults to 60 s.
_TIME_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 120.0,
)
#: Tickets ahead of a new one (0: at the head at once).
_POSITION_BUCKETS: Final = (0, 1, 2, 3, 5, 8, 13, 21, 34, 55)
#: A timer fires within one poll interval (1 s by default) plus a claim, more in a backlog.
_LAG_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)


# ---- what the stores call ------------------------------------------------------------------


class LockRecorder(Protocol):
    def now(self) -> float: ...
    def drawn(self, ahead: int) -> None: ...
    def acquired(self, since: float) -> float: ...
    def released(self, since: float) -> None: ...
    def overtaken(self) -> None: ...
    def reply_lost(self) -> None: ...
    def reentered(self) -> None: ...
    def restored(self) -> None: ...
    def durable_unacked(self) -> None: ...


class ConnectionRecorder(Protocol):
    def retried(self) -> None: ...
    def refreshed(self) -> None: ...


class TimerRecorder(Protocol):
    def claimed(self, count: int) -> None: ...
    def fired(self, lag: float) -> None: ...
    def dropped(self) -> None: ...
    def failed(self) -> None: ...


class _Off:
    """Every recorder's methods, doing nothing: what a store gets with metrics off."""

    __slots__ = ()

    def now(self) -> float:
        return 0.0

    def drawn(self, ahead: int) -> None:
        pass

    def acquired(self, since: float) -> float:
        return 0.0

    def released(self, since: float) -> None:
        pass

    def overtaken(self) -> None:
        pass

    def reply_lost(self) -> None:
        pass

    def reentered(self) -> None:
        pass

    def restored(self) -> None:
        pass

    def durable_unacked(self) -> None:
        pass

    def retried(self) -> None:
        pass

    def refreshed(self) -> None:
        pass

    def claimed(self, count: int) -> None:
        pass

    def fired(self, lag: float) -> None:
        pass

    def dropped(self) -> None:
        pass

    def failed(self) -> None:
        pass


OFF: Final = _Off()


class _LockSeries:
    __slots__ = (
        "_durable_unacked", "_hold", "_overtaken", "_position", "_reentered", "_reply_lost",
        "_restored", "_wait",
    )

    def __init__(self, series: _Series, labels: tuple[str, str]) -> None:
        self._wait = series.lock_wait.labels(*labels).observe
        self._hold = series.lock_hold.labels(*labels).observe
        self._position = series.lock_position.labels(*labels).observe
        self._overtaken = series.lock_overtaken.labels(*labels).inc
        self._reply_lost = series.lock_reply_lost.labels(*labels).inc
        self._reentered = series.lock_reentered.labels(*labels).inc
        self._restored = series.lock_restored.labels(*labels).inc
        self._durable_unacked = series.lock_durable_unacked.labels(*labels).inc

    now = staticmethod(time.perf_counter)

    def drawn(self, ahead: int) -> None:
        self._position(ahead)

    def acquired(self, since: float) -> float:
        now = time.perf_counter()
        self._wait(now - since)
        return now

    def released(self, since: float) -> None:
        self._hold(time.perf_counter() - since)

    def overtaken(self) -> None:
        self._overtaken()

    def reply_lost(self) -> None:
        self._reply_lost()

    def reentered(self) -> None:
        self._reentered()

    def restored(self) -> None:
        self._restored()

    def durable_unacked(self) -> None:
        self._durable_unacked()


class _ConnectionSeries:
    __slots__ = ("_refreshed", "_retried")

    def __init__(self, series: _Series, labels: tuple[str, str]) -> None:
        self._retried = series.redis_retries.labels(*labels).inc
        self._refreshed = series.redis_reconnects.labels(*labels).inc

    def retried(self) -> None:
        self._retried()

    def refreshed(self) -> None:
        self._refreshed()


class _TimerSeries:
    __slots__ = ("_claimed", "_dropped", "_failed", "_fired", "_lag")

    def __init__(self, series: _Series, kind: str) -> None:
        self._claimed = series.timers_claimed.labels(kind).inc
        self._fired = series.timers_fired.labels(kind).inc
        self._dropped = series.timers_dropped.labels(kind).inc
        self._failed = series.timers_failed.labels(kind).inc
        self._lag = series.timer_lag.labels(kind).observe

    def claimed(self, count: int) -> None:
        self._claimed(count)

    def fired(self, lag: float) -> None:
        self._lag(max(lag, 0.0))
        self._fired()

    def dropped(self) -> None:
        self._dropped()

    def failed(self) -> None:
        self._failed()


class _HotHistogram:
    """A labelled histogram for the lock hot path, collected at scrape time.

    ``prometheus_client``'s ``Histogram.observe`` scans its buckets and takes two locks per
    call (about 0.7 µs); three per lock cycle were 5 % of a Redis cycle. This one bisects and
    takes one uncontended lock per observation, and builds the cumulative buckets only when
    scraped. Timer and Redis series are not on a hot path and use ``prometheus_client``'s own.
    """

    def __init__(
        self, name: str, documentation: str, labelnames: tuple[str, ...],
        buckets: tuple[float, ...], registry: Any,
    ) -> None:
        self._name = name
        self._doc = documentation
        self._labelnames = labelnames
        self._bounds = tuple(float(b) for b in buckets)
        self._children: dict[tuple[str, ...], _HotChild] = {}
        self._guard = threading.Lock()
        registry.register(self)

    def labels(self, *values: str) -> _HotChild:
        with self._guard:
            child = self._children.get(values)
            if child is None:
                child = self._children[values] = _HotChild(self._bounds)
            return child

    def describe(self) -> list[Any]:
        from prometheus_client.core import HistogramMetricFamily  # noqa: PLC0415 - optional

        return [HistogramMetricFamily(self._name, self._doc, labels=self._labelnames)]

    def collect(self) -> list[Any]:
        from prometheus_client.core import HistogramMetricFamily  # noqa: PLC0415 - optional

        family = HistogramMetricFamily(self._name, self._doc, labels=self._labelnames)
        with self._guard:
            children = list(self._children.items())
        les = [*(repr(b) for b in self._bounds), "+Inf"]
        for values, child in children:
            counts, total = child.snapshot()
            cumulative = list(zip(les, itertools.accumulate(counts), strict=True))
            family.add_metric(list(values), cumulative, total)
        return [family]


class _HotChild:
    __slots__ = ("_bounds", "_counts", "_lock", "_sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()  # Rasa runs stores on more than one thread

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self._bounds, value)  # the first bucket with value <= le
        with self._lock:
            self._counts[i] += 1
            self._sum += value

    def snapshot(self) -> tuple[list[int], float]:
        with self._lock:
            return list(self._counts), self._sum


class _Series:
    """The Prometheus series, made once per registry."""

    def __init__(self, registry: Any) -> None:
        import prometheus_client as prom  # noqa: PLC0415 - optional

        lock = ("store", "mode")
        self.lock_wait = _HotHistogram(
            "turnstile_lock_wait_seconds",
            "Seconds from drawing a ticket to holding the conversation's lock",
            lock, _TIME_BUCKETS, registry,
        )
        self.lock_hold = _HotHistogram(
            "turnstile_lock_hold_seconds",
            "Seconds a conversation's lock was held, from the turn to the release",
            lock, _TIME_BUCKETS, registry,
        )
        self.lock_position = _HotHistogram(
            "turnstile_lock_queue_position",
            "Live tickets ahead of a ticket when it is drawn (0: at the head)",
            lock, tuple(float(b) for b in _POSITION_BUCKETS), registry,
        )
        self.lock_overtaken = prom.Counter(
            "turnstile_lock_overtaken",
            "Holders whose ticket was gone at the release (expired after lock_lifetime, or "
            "removed before: deleted, or lost in a failover) or at a lease renewal: the next "
            "message may have run meanwhile",
            lock, registry=registry,
        )
        self.lock_reply_lost = prom.Counter(
            "turnstile_lock_release_reply_lost",
            "Releases whose reply was lost (the connection closed after Redis ran them) and "
            "whose retry found the ticket already returned: not overtaken",
            lock, registry=registry,
        )
        self.lock_reentered = prom.Counter(
            "turnstile_lock_reentered",
            "Waiters whose ticket was gone (lost in a failover, or its lease ran out while "
            "Redis was unreachable) and that re-entered the line instead of failing",
            lock, registry=registry,
        )
        self.lock_restored = prom.Counter(
            "turnstile_lock_restored",
            "Holders whose ticket was gone at a lease renewal and was put back, nobody having "
            "been let in meanwhile",
            lock, registry=registry,
        )
        self.lock_durable_unacked = prom.Counter(
            "turnstile_lock_durable_unacknowledged",
            "Durable mode: turns granted without the replicas' acknowledgement (too few "
            "replicas answered WAIT in time, or acknowledgements were paused after that)",
            lock, registry=registry,
        )
        conn = ("mode", "client")
        self.redis_retries = prom.Counter(
            "turnstile_redis_retries",
            "Redis operations retried after a failover-like error (connection lost, "
            "READONLY, CLUSTERDOWN, LOADING...)",
            conn, registry=registry,
        )
        self.redis_reconnects = prom.Counter(
            "turnstile_redis_reconnects",
            "Redis clients rebuilt after a failure (Sentinel: master asked again; Cluster: "
            "slots read again)",
            conn, registry=registry,
        )
        self.timers_claimed = prom.Counter(
            "turnstile_timers_claimed",
            "Due timers this pod claimed (of all pods exactly one claims each)",
            ("store",), registry=registry,
        )
        self.timers_fired = prom.Counter(
            "turnstile_timers_fired",
            "Timer callbacks called (the lag is observed at the same moment)",
            ("store",), registry=registry,
        )
        self.timers_dropped = prom.Counter(
            "turnstile_timers_dropped",
            "Claimed timers not fired because their conversation moved on to a new session",
            ("store",), registry=registry,
        )
        self.timers_failed = prom.Counter(
            "turnstile_timer_callback_errors",
            "Timer callbacks that raised (not retried)",
            ("store",), registry=registry,
        )
        self.timer_lag = prom.Histogram(
            "turnstile_timer_fire_lag_seconds",
            "Seconds from a timer's scheduled time to its callback",
            ("store",), buckets=_LAG_BUCKETS, registry=registry,
        )
        self.fallback = prom.Gauge(
            "turnstile_timer_fallback_active",
            "Redis timer stores serving from memory because Redis is unreachable",
            ("mode",), registry=registry,
        )
        self.fallback_pending = prom.Gauge(
            "turnstile_timer_fallback_pending",
            "Timer changes kept in memory to write back to Redis",
            ("mode",), registry=registry,
        )
        #: Timer stores whose fallback state the gauges read at scrape time.
        self.timer_stores: weakref.WeakSet[Any] = weakref.WeakSet()
        self._gauged_modes: set[str] = set()

    def gauge_mode(self, mode: str) -> None:
        if mode in self._gauged_modes:
            return
        self._gauged_modes.add(mode)
        stores = self.timer_stores

        def active() -> float:
            return float(sum(1 for s in list(stores) if _mode(s) == mode and s.using_fallback))

        def pending() -> float:
            return float(sum(s.pending_writeback for s in list(stores) if _mode(s) == mode))

        self.fallback.labels(mode).set_function(active)
        self.fallback_pending.labels(mode).set_function(pending)


# ---- the process-wide choice -----------------------------------------------------------------

_guard = threading.Lock()
_series: _Series | None = None
_decided = False
_server: Any = None
#: Series per registry: a registry refuses a second series of the same name.
_by_registry: weakref.WeakKeyDictionary[Any, _Series] = weakref.WeakKeyDictionary()


def configure(
    backend: str | None = None,
    *,
    registry: Any = None,
    port: int | None = None,
    addr: str | None = None,
    environ: Mapping[str, str] | None = None,
    meter_provider: Any = None,
) -> bool:
    """Choose the backend now (else the first store does, from the environment); True if on.

    ``registry`` is a ``prometheus_client.CollectorRegistry`` (default: the global one);
    ``port`` starts the HTTP exposition on ``addr``. Stores bound earlier keep their series.
    """
    global _series, _decided, _server  # noqa: PLW0603 - one choice per process
    env = os.environ if environ is None else environ
    with _guard:
        choice = (backend if backend is not None else env.get(METRICS_ENV, "auto")).strip()
        choice = choice.lower() or "auto"
        if choice not in BACKENDS:
            raise ConfigurationError(METRICS_ENV, choice, " | ".join(BACKENDS))
        if port is None:
            port = _port(env)
        _series = None
        if choice == "off":
            _decided = True
            return False
        if choice == "otel" or (choice == "auto" and not _importable("prometheus_client")
                                and _importable("opentelemetry.metrics")):
            _series = _otel_series(choice, meter_provider)
            _decided = True
            return True
        try:
            import prometheus_client as prom  # noqa: PLC0415 - optional
        except ImportError:
            if choice == "prometheus":
                raise ConfigurationError(
                    METRICS_ENV, choice, "auto, otel or off without prometheus_client installed "
                    "(pip install 'rasa-turnstile[metrics]')"
                ) from None
            _decided = True
            return False
        _decided = True
        reg = prom.REGISTRY if registry is None else registry
        _series = _by_registry.get(reg)
        if _series is None:
            _series = _by_registry[reg] = _Series(reg)
        if port is not None and _server is None:
            where = addr or env.get(ADDR_ENV, "").strip() or "0.0.0.0"
            try:
                _server = prom.start_http_server(port, addr=where, registry=reg)
            except OSError as exc:
                logger.warning("Turnstile metrics: cannot serve on %s:%d (%s)", where, port, exc)
        return True


def reset() -> None:
    """Forget the choice and stop the HTTP server (tests)."""
    global _series, _decided, _server
    with _guard:
        _series, _decided = None, False
        server, _server = _server, None
    if server is not None:
        stop = server[0].shutdown if isinstance(server, tuple) else None
        if stop is not None:
            stop()
            server[0].server_close()


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _otel_series(choice: str, meter_provider: Any) -> Any:
    """The series as OpenTelemetry instruments (``turnstile.stores.otel``)."""
    from turnstile import __version__  # noqa: PLC0415 - at the choice only
    from turnstile.stores.otel import OtelSeries  # noqa: PLC0415 - imports the API itself

    try:
        return OtelSeries(
            meter_provider, version=__version__, time_buckets=_TIME_BUCKETS,
            position_buckets=_POSITION_BUCKETS, lag_buckets=_LAG_BUCKETS, mode_of=_mode,
        )
    except ImportError:
        raise ConfigurationError(
            METRICS_ENV, choice, "auto, prometheus or off without opentelemetry-api installed "
            "(pip install 'rasa-turnstile[otel]')"
        ) from None


def _port(env: Mapping[str, str]) -> int | None:
    raw = env.get(PORT_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigurationError(PORT_ENV, raw, "a TCP port (1-65535), or unset")
    return int(raw)


def _current() -> _Series | None:
    if not _decided:
        configure()
    return _series


def decide() -> bool:
    """Make the process-wide choice now if nobody has (a bad environment fails here, when a
    store is built, not at its first message); True if metrics are on."""
    return _current() is not None


def _mode(store: Any) -> str:
    settings = getattr(store, "settings", None)
    redis = getattr(settings, "redis", settings)
    return str(getattr(redis, "deployment_mode", None) or "none")


def _kind(store: object) -> str:
    """``memory`` or ``redis``: the module of the first Turnstile store class in the MRO."""
    for cls in type(store).__mro__:
        name = cls.__module__.rsplit(".", 1)[-1]
        if cls.__module__.startswith("turnstile.stores.") and name in ("memory", "redis"):
            return name
    return "other"


def lock_recorder(store: object) -> LockRecorder:
    """What a lock store records into; bound once per store."""
    series = _current()
    return OFF if series is None else _LockSeries(series, (_kind(store), _mode(store)))


def connection_recorder(mode: str, client_name: str) -> ConnectionRecorder:
    """What a Redis connection records retries into; bound once per connection."""
    series = _current()
    return OFF if series is None else _ConnectionSeries(series, (mode, client_name))


def timer_recorder(store: object) -> TimerRecorder:
    """What a timer manager records into, for its store; bound once per manager."""
    series = _current()
    return OFF if series is None else _TimerSeries(series, _kind(store))


def watch_fallback(store: object) -> None:
    """Count ``store`` in the fallback gauges while it lives (read at scrape time: the store
    needs ``using_fallback`` and ``pending_writeback``)."""
    series = _current()
    if series is not None:
        series.timer_stores.add(store)
        series.gauge_mode(_mode(store))

