"""The names the store library promises; a change here is a change users see."""

from __future__ import annotations

import subprocess
import sys

import turnstile.rasa
import turnstile.stores

EXPECTED_STORES = {
    "DEFAULT_LOCK_LIFETIME",
    "BaseTimerStore",
    "Claimed",
    "ConfigurationError",
    "HeldTicket",
    "InMemoryTicketLockStore",
    "InMemoryTimerStore",
    "LockContext",
    "LockError",
    "LockTimeoutError",
    "ProbeReport",
    "RedisConnection",
    "RedisSettings",
    "RedisTicketLockStore",
    "RedisTimerStore",
    "SessionTimer",
    "SettingsReader",
    "StoreUnavailableError",
    "Ticket",
    "TicketLock",
    "TicketLockStore",
    "TimerManager",
    "TimerSettings",
    "TurnstileError",
    "probe",
}


def test_store_library_exports_exactly_its_public_names() -> None:
    assert set(turnstile.stores.__all__) == EXPECTED_STORES
    for name in EXPECTED_STORES:
        assert getattr(turnstile.stores, name) is not None


def test_rasa_module_exports_the_drop_in_classes_and_the_timer_manager_launcher() -> None:
    assert turnstile.rasa.__all__ == [
        "RasaTimerManager", "TicketLockStore", "TimerStore", "install", "installed", "uninstall",
    ]


def test_every_store_error_is_a_turnstile_error() -> None:
    errors = [
        turnstile.stores.ConfigurationError,
        turnstile.stores.StoreUnavailableError,
        turnstile.stores.LockError,
        turnstile.stores.LockTimeoutError,
    ]
    assert all(issubclass(e, turnstile.stores.TurnstileError) for e in errors)


def test_bot_image_import_pulls_in_neither_kopf_nor_kubernetes_nor_yaml() -> None:
    code = (
        "import sys, turnstile.stores, turnstile.rasa;"
        "bad = sorted(m for m in ('kopf', 'kubernetes', 'yaml', 'pydantic', 'turnstile.operator')"
        " if m in sys.modules); print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""
