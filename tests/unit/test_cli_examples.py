"""Every sample in examples/ parses, renders, and carries no secret into the rendered file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from turnstile.cli import main

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_there_is_a_lockstore_and_a_timerstore_per_mode() -> None:
    seen = set()
    for path in EXAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] in ("LockStore", "TimerStore"):
                seen.add((doc["kind"], doc["spec"]["redis"].get("deploymentMode", "standard")))
    assert {(k, m) for k in ("LockStore", "TimerStore")
            for m in ("standard", "cluster", "sentinel")} <= seen


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_renders(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(path)]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out)
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc["kind"] == "Secret":
            for value in (doc.get("stringData") or {}).values():
                assert value not in out
