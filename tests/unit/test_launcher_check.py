"""Which bot containers the operator reports for running plain ``rasa`` with Turnstile's
timer store (``turnstile.operator.decide.launcher``)."""

from __future__ import annotations

from typing import Any

import pytest

from turnstile.operator.decide.launcher import plain_rasa, plain_rasa_containers


@pytest.mark.parametrize(
    "container",
    [
        {"name": "bot", "command": ["turnstile-rasa"], "args": ["run", "--enable-api"]},
        {"name": "bot", "command": ["/opt/venv/bin/turnstile-rasa", "run"]},
        {"name": "bot", "command": ["python", "-m", "turnstile.rasa.launcher", "run"]},
        {"name": "bot", "command": ["sh", "-c", "exec turnstile-rasa run --enable-api"]},
        {"name": "bot", "image": "rasa/rasa-pro:3.21.0", "command": ["turnstile-rasa"],
         "args": ["run"]},
    ],
)
def test_the_launcher_is_not_reported(container: dict[str, Any]) -> None:
    assert plain_rasa(container) is None


@pytest.mark.parametrize(
    ("container", "seen"),
    [
        ({"name": "bot", "command": ["rasa"], "args": ["run"]}, "runs `rasa`"),
        ({"name": "bot", "command": ["/usr/local/bin/rasa", "run"]}, "runs `rasa`"),
        ({"name": "bot", "command": ["python", "-m", "rasa", "run"]}, "runs `rasa`"),
        ({"name": "bot", "command": ["sh", "-c", "cd /app && rasa run --enable-api"]},
         "runs `rasa`"),
        ({"name": "bot", "image": "rasa/rasa-pro:3.21.0", "args": ["run"]},
         "image's entrypoint"),
        ({"name": "bot", "image": "docker.io/rasa/rasa:3.6.21-full"}, "image's entrypoint"),
        ({"name": "bot", "image": "registry.example/rasa-releases/rasa-pro@sha256:abc"},
         "image's entrypoint"),
    ],
)
def test_plain_rasa_is_reported_with_how_it_was_seen(
    container: dict[str, Any], seen: str
) -> None:
    found = plain_rasa(container)
    assert found is not None and found.container == "bot" and seen in found.seen


@pytest.mark.parametrize(
    "container",
    [
        {"name": "bot", "image": "acme/bot:1.0", "args": ["run"]},  # the user's own image
        {"name": "bot", "image": "registry.invalid/rasa:1", "args": ["run"]},  # ditto
        {"name": "bot", "command": ["/app/start.sh"]},  # a wrapper: cannot be told
        {"name": "sidecar", "image": "nginx:1.27"},
    ],
)
def test_what_cannot_be_told_is_not_reported(container: dict[str, Any]) -> None:
    assert plain_rasa(container) is None


def test_only_the_plain_rasa_containers_of_a_pod_are_listed() -> None:
    spec = {
        "containers": [
            {"name": "rasa", "image": "rasa/rasa-pro:3.21.0", "args": ["run"]},
            {"name": "proxy", "image": "envoyproxy/envoy:v1.31"},
            {"name": "ok", "command": ["turnstile-rasa"], "args": ["run"]},
        ]
    }
    found = plain_rasa_containers(spec)
    assert [f.container for f in found] == ["rasa"]
    message = found[0].message("Deployment/bot", ["TimerStore/timers"])
    assert "Deployment/bot" in message and "TimerStore/timers" in message
    assert 'command: ["turnstile-rasa"]' in message
    assert plain_rasa_containers(None) == [] and plain_rasa_containers({}) == []
