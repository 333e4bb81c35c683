"""``turnstile-rasa run`` fails closed: Rasa starts only on an endpoints file holding the store
sections the pod must load (``turnstile.rasa.startup``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from turnstile.operator.decide.render import Target, plain_env, render_files
from turnstile.operator.model.specs import StoreSpec, parse_spec
from turnstile.rasa.startup import (
    EX_CONFIG,
    Expected,
    StartRefused,
    endpoints_path,
    expected_from_env,
    problems,
    wait_until_safe,
)
from turnstile.stores.errors import ConfigurationError
from turnstile.stores.fingerprint import section_fingerprint

pytestmark = pytest.mark.unit

SPEC = {
    "redis": {
        "deploymentMode": "standard",
        "host": "10.0.0.7",
        "port": 6379,
        "keyPrefix": "0123",
        "socketTimeout": 0.5,
        "passwordSecretRef": {"name": "auth", "key": "password"},
    },
    "configMap": {"name": "bot-endpoints"},
    "lockLifetime": 30,
}
USER_FILE = "tracker_store:\n  type: redis\n  url: 10.0.0.7\naction_endpoint:\n  url: http://a\n"


def _store(spec: dict[str, Any] | None = None) -> StoreSpec:
    return parse_spec("LockStore", spec or SPEC, namespace="bots", name="locks")


def _pin(spec: dict[str, Any] | None = None) -> str:
    return dict(plain_env("LockStore", _store(spec)))["TURNSTILE_EXPECT_LOCK_STORE"]


def render_with_user_sections(spec: dict[str, Any] | None = None) -> str:
    """The file the operator writes into a ConfigMap that already held the user's sections."""
    where = Target("bots", "bot-endpoints", "endpoints.yml")
    return render_files([_store(spec)], {where: USER_FILE})[where]


def _rendered(tmp_path: Path, spec: dict[str, Any] | None = None) -> Path:
    path = tmp_path / "endpoints.yml"
    path.write_text(render_with_user_sections(spec))
    return path


def test_the_operators_file_matches_the_pin_it_injects(tmp_path: Path) -> None:
    """Round trip: what the operator renders (ruamel splice into the user's file) parses, in
    the pod, to the section whose fingerprint the operator injected."""
    path = _rendered(tmp_path)
    assert "tracker_store" in path.read_text()
    assert problems(str(path), Expected(pins={"lock_store": _pin()})) == []
    assert problems(str(path), Expected(frozenset({"lock_store"}))) == []


def test_a_file_without_the_section_is_refused_naming_why(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.yml"
    path.write_text(USER_FILE)  # a helm upgrade of the bot's chart wrote the file back
    found = problems(str(path), Expected(frozenset({"lock_store"})))
    assert len(found) == 1
    assert "has no lock_store section" in found[0]
    assert "TURNSTILE_REQUIRE_SECTIONS names it" in found[0]
    assert "in-memory lock store" in found[0]


def test_another_stores_section_is_refused_by_the_pin(tmp_path: Path) -> None:
    old = {**SPEC, "redis": {**SPEC["redis"], "keyPrefix": "old"}}
    path = tmp_path / "endpoints.yml"
    path.write_text(render_with_user_sections(old))  # a stale copy of the file
    found = problems(str(path), Expected(pins={"lock_store": _pin()}))
    assert len(found) == 1 and "not the one the operator rendered" in found[0], found
    assert "10.0.0.7" not in found[0] and "old" not in found[0].split("(")[0]


def test_transition_keys_do_not_change_the_fingerprint() -> None:
    section = {"type": "turnstile.rasa.TicketLockStore", "host": "h", "key_prefix": "new"}
    moving = {**section, "transition_from": {"type": "redis", "host": "h"},
              "transition_until": "2026-12-06T22:00:00Z"}  # fmt: skip
    assert section_fingerprint(moving) == section_fingerprint(section)
    assert section_fingerprint({**section, "key_prefix": "other"}) != section_fingerprint(section)


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        (None, "does not exist"),
        ("lock_store: [unclosed\n", "is not valid YAML at line"),
        ("- a list\n", "is not a mapping"),
        ("lock_store: in_memory\n", "has an unusable lock_store section"),
        ("lock_store:\n  host: h\n", "has an unusable lock_store section"),
    ],
)
def test_unusable_files_are_refused(tmp_path: Path, text: str | None, expect: str) -> None:
    path = tmp_path / "endpoints.yml"
    if text is not None:
        path.write_text(text)
    (found,) = problems(str(path), Expected(frozenset({"lock_store"})))
    assert expect in found


def test_env_is_read_and_bad_values_name_the_variable() -> None:
    env = {"TURNSTILE_REQUIRE_SECTIONS": "lock_store, timer_store",
           "TURNSTILE_EXPECT_TIMER_STORE": "sha256:abc"}  # fmt: skip
    expected = expected_from_env(env)
    assert expected.required == {"lock_store", "timer_store"}
    assert expected.pins == {"timer_store": "sha256:abc"}
    assert not expected_from_env({})
    with pytest.raises(ConfigurationError, match=r"TURNSTILE_REQUIRE_SECTIONS: .*'tracker_store'"):
        expected_from_env({"TURNSTILE_REQUIRE_SECTIONS": "tracker_store"})
    with pytest.raises(ConfigurationError, match=r"TURNSTILE_EXPECT_LOCK_STORE: .*'abc'"):
        expected_from_env({"TURNSTILE_EXPECT_LOCK_STORE": "abc"})
    with pytest.raises(ConfigurationError, match="TURNSTILE_STARTUP_WAIT_SECONDS"):
        wait_until_safe(["run"], {"TURNSTILE_REQUIRE_SECTIONS": "lock_store",
                                  "TURNSTILE_STARTUP_WAIT_SECONDS": "soon"})  # fmt: skip


@pytest.mark.parametrize(
    ("args", "path"),
    [
        (["--enable-api"], "endpoints.yml"),
        (["--endpoints", "/app/e.yml", "--enable-api"], "/app/e.yml"),
        (["--enable-api", "--endpoints=/app/x.yml"], "/app/x.yml"),
    ],
)
def test_the_file_is_the_one_rasa_reads(args: list[str], path: str) -> None:
    assert endpoints_path(args) == path


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps = 0

    def __call__(self) -> float:
        return self.now


def test_it_waits_until_the_operator_puts_the_section_back(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.yml"
    path.write_text(USER_FILE)
    clock = _Clock()

    def sleep(seconds: float) -> None:
        clock.now += seconds
        clock.sleeps += 1
        if clock.sleeps == 3:  # the operator restores its section (the kubelet updates the file)
            path.write_text(render_with_user_sections())

    env = {"TURNSTILE_EXPECT_LOCK_STORE": _pin(), "TURNSTILE_REQUIRE_SECTIONS": "lock_store"}
    wait_until_safe(["run", "--endpoints", str(path)], env, clock=clock, sleep=sleep)
    assert clock.sleeps == 3


def test_it_gives_up_with_the_reason_in_the_termination_message(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.yml"
    path.write_text(USER_FILE)
    clock = _Clock()
    log = tmp_path / "termination-log"
    env = {"TURNSTILE_REQUIRE_SECTIONS": "lock_store", "TURNSTILE_STARTUP_WAIT_SECONDS": "5",
           "TURNSTILE_TERMINATION_LOG": str(log)}  # fmt: skip

    def sleep(seconds: float) -> None:
        clock.now += seconds

    with pytest.raises(StartRefused) as refused:
        wait_until_safe(["run", "--endpoints", str(path)], env, clock=clock, sleep=sleep)
    assert refused.value.code == EX_CONFIG
    assert "refused to start Rasa after 5 s" in str(refused.value)
    assert "has no lock_store section" in log.read_text()
    assert clock.now == pytest.approx(5.0)


def test_nothing_is_checked_without_expectations_or_outside_run(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere.yml")
    wait_until_safe(["run", "--endpoints", missing], {})
    env = {"TURNSTILE_REQUIRE_SECTIONS": "lock_store", "TURNSTILE_STARTUP_WAIT_SECONDS": "0"}
    wait_until_safe(["train"], env)
    wait_until_safe(["run", "actions"], env)
    with pytest.raises(StartRefused):
        wait_until_safe(["run", "--endpoints", missing], env)


def test_the_launcher_exits_78_before_rasa_is_imported(tmp_path: Path) -> None:
    """The command line as a pod runs it: refused, exit 78, the reason on stderr and in the
    termination message; Rasa (absent from this venv) is never reached."""
    path = tmp_path / "endpoints.yml"
    path.write_text(USER_FILE)
    log = tmp_path / "termination-log"
    env = {**os.environ, "TURNSTILE_REQUIRE_SECTIONS": "lock_store",
           "TURNSTILE_STARTUP_WAIT_SECONDS": "0",
           "TURNSTILE_TERMINATION_LOG": str(log)}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", "from turnstile.rasa.launcher import main; main()", "run",
         "--endpoints", str(path)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == EX_CONFIG, done.stderr
    assert "has no lock_store section" in done.stderr
    assert "cannot be imported" not in done.stderr
    assert "has no lock_store section" in log.read_text()
