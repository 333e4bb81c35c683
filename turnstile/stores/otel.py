"""The bot metrics through the OpenTelemetry metrics API (``TURNSTILE_METRICS=otel``).

:mod:`turnstile.stores.metrics` binds every store's series once through one shape: a series
has ``labels(*values)`` whose child has ``observe(value)`` (histograms) or ``inc(amount)``
(counters). This module gives OpenTelemetry instruments that shape, so the stores' recorders are
the same for both backends. Only the API (``opentelemetry-api``) is imported: the application
(or ``opentelemetry-instrument``) configures the SDK, its readers and exporters; without one the
API's no-op meter is used. A child binds its attributes once, so an observation is one call.

Names follow OpenTelemetry's conventions (dotted, unit apart: ``turnstile.lock.wait`` in ``s``);
an OpenTelemetry Prometheus exporter turns them into the same names the ``prometheus`` backend
exports (``turnstile_lock_wait_seconds``). The histograms advise the same bucket boundaries.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

#: The meter's name (instrumentation scope), as OpenTelemetry asks: the library's package.
SCOPE = "turnstile.stores"


class _Child:
    """One attribute set of an instrument: ``observe`` for a histogram, ``inc`` for a counter."""

    __slots__ = ("_attributes", "_instrument")

    def __init__(self, instrument: Any, attributes: dict[str, str]) -> None:
        self._instrument = instrument
        self._attributes = attributes

    def observe(self, value: float) -> None:
        self._instrument.record(value, self._attributes)

    def inc(self, amount: float = 1) -> None:
        self._instrument.add(amount, self._attributes)


class _Instrument:
    """An OpenTelemetry instrument with ``labels(*values)`` like a Prometheus series."""

    def __init__(self, instrument: Any, labelnames: Sequence[str]) -> None:
        self._instrument = instrument
        self._labelnames = tuple(labelnames)

    def labels(self, *values: str) -> _Child:
        return _Child(self._instrument, dict(zip(self._labelnames, values, strict=True)))


def _histogram(
    meter: Any, name: str, unit: str, description: str, labels: Sequence[str], *,
    buckets: Sequence[float],
) -> _Instrument:
    try:  # the bucket advice arrived in opentelemetry-api 1.23
        made = meter.create_histogram(
            name, unit=unit, description=description,
            explicit_bucket_boundaries_advisory=[float(b) for b in buckets],
        )
    except TypeError:
        made = meter.create_histogram(name, unit=unit, description=description)
    return _Instrument(made, labels)


def _counter(meter: Any, name: str, unit: str, description: str,
             labels: Sequence[str]) -> _Instrument:
    return _Instrument(meter.create_counter(name, unit=unit, description=description), labels)


class OtelSeries:
    """The series of :class:`turnstile.stores.metrics._Series`, as OpenTelemetry instruments."""

    def __init__(
        self, meter_provider: Any, *, version: str, time_buckets: Sequence[float],
        position_buckets: Sequence[float], lag_buckets: Sequence[float],
        mode_of: Callable[[Any], str],
    ) -> None:
        from opentelemetry import metrics as otel  # noqa: PLC0415 - optional

        provider = meter_provider if meter_provider is not None else otel.get_meter_provider()
        meter = provider.get_meter(SCOPE, version)
        lock = ("store", "mode")
        self.lock_wait = _histogram(
            meter, "turnstile.lock.wait", "s",
            "Time from drawing a ticket to holding the conversation's lock", lock,
            buckets=time_buckets)
        self.lock_hold = _histogram(
            meter, "turnstile.lock.hold", "s",
            "Time a conversation's lock was held, from the turn to the release", lock,
            buckets=time_buckets)
        self.lock_position = _histogram(
            meter, "turnstile.lock.queue_position", "{ticket}",
            "Live tickets ahead of a ticket when it is drawn (0: at the head)", lock,
            buckets=position_buckets)
        self.lock_overtaken = _counter(
            meter, "turnstile.lock.overtaken", "{holder}",
            "Holders whose ticket was gone at the release or at a lease renewal", lock)
        self.lock_reply_lost = _counter(
            meter, "turnstile.lock.release_reply_lost", "{release}",
            "Releases whose reply was lost and whose retry found the ticket already returned",
            lock)
        self.lock_reentered = _counter(
            meter, "turnstile.lock.reentered", "{waiter}",
            "Waiters whose ticket was gone after a failover and that re-entered the line", lock)
        self.lock_restored = _counter(
            meter, "turnstile.lock.restored", "{holder}",
            "Holders whose ticket was gone at a lease renewal and was put back", lock)
        self.lock_durable_unacked = _counter(
            meter, "turnstile.lock.durable_unacknowledged", "{turn}",
            "Durable mode: turns granted without the replicas' acknowledgement", lock)
        conn = ("mode", "client")
        self.redis_retries = _counter(
            meter, "turnstile.redis.retries", "{operation}",
            "Redis operations retried after a failover-like error", conn)
        self.redis_reconnects = _counter(
            meter, "turnstile.redis.reconnects", "{client}",
            "Redis clients rebuilt after a failure (Sentinel, Cluster)", conn)
        timer = ("store",)
        self.timers_claimed = _counter(
            meter, "turnstile.timers.claimed", "{timer}", "Due timers this pod claimed", timer)
        self.timers_fired = _counter(
            meter, "turnstile.timers.fired", "{timer}", "Timer callbacks called", timer)
        self.timers_dropped = _counter(
            meter, "turnstile.timers.dropped", "{timer}",
            "Claimed timers not fired because their conversation moved on", timer)
        self.timers_failed = _counter(
            meter, "turnstile.timer.callback_errors", "{timer}",
            "Timer callbacks that raised (not retried)", timer)
        self.timer_lag = _histogram(
            meter, "turnstile.timer.fire_lag", "s",
            "Time from a timer's scheduled time to its callback", timer, buckets=lag_buckets)

        #: Timer stores whose fallback state the gauges read when collected.
        self.timer_stores: weakref.WeakSet[Any] = weakref.WeakSet()
        stores = self.timer_stores

        def by_mode() -> dict[str, tuple[float, float]]:
            found: dict[str, tuple[float, float]] = {}
            for store in list(stores):
                active, pending = found.get(mode_of(store), (0.0, 0.0))
                found[mode_of(store)] = (active + bool(store.using_fallback),
                                         pending + store.pending_writeback)
            return found

        def active(_options: Any) -> list[Any]:
            return [otel.Observation(a, {"mode": m}) for m, (a, _) in by_mode().items()]

        def pending(_options: Any) -> list[Any]:
            return [otel.Observation(p, {"mode": m}) for m, (_, p) in by_mode().items()]

        meter.create_observable_gauge(
            "turnstile.timer.fallback.active", [active], unit="{store}",
            description="Redis timer stores serving from memory because Redis is unreachable")
        meter.create_observable_gauge(
            "turnstile.timer.fallback.pending", [pending], unit="{change}",
            description="Timer changes kept in memory to write back to Redis")

    def gauge_mode(self, mode: str) -> None:
        """Nothing to do: the gauges report every mode of the stores they watch."""
