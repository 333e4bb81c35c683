"""``turnstile render`` prints what the operator writes; ``turnstile check`` reads like Rasa."""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from turnstile.cli import main, read_endpoints, render_command
from turnstile.operator.decide.render import render_files, section
from turnstile.operator.model.specs import parse_store

MANIFESTS = """\
apiVersion: v1
kind: Secret
metadata: {name: redis-auth}
stringData: {password: do-not-print-me}
---
apiVersion: turnstile.dev/v1alpha1
kind: LockStore
metadata: {name: locks, namespace: bots}
spec:
  redis:
    deploymentMode: sentinel
    endpoints: ["s1:26379", "s2:26379"]
    passwordSecretRef: {name: redis-auth}
  configMap: {name: bot-endpoints}
  lockLifetime: 30
---
apiVersion: turnstile.dev/v1alpha1
kind: TimerStore
metadata: {name: timers, namespace: bots}
spec:
  redis: {host: redis.bots.svc}
  configMap: {name: bot-endpoints}
"""


def test_render_prints_exactly_what_the_operator_renders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "stores.yaml"
    path.write_text(MANIFESTS)
    assert main(["render", str(path)]) == 0
    out = capsys.readouterr().out
    docs = [d for d in yaml.safe_load_all(MANIFESTS) if d["kind"] != "Secret"]
    expected = render_files([parse_store(d) for d in docs])
    assert out == next(iter(expected.values()))
    assert "do-not-print-me" not in out
    assert "${TURNSTILE_LOCK_STORE_PASSWORD}" in out
    assert list(yaml.safe_load(out)) == ["lock_store", "timer_store"]
    assert yaml.safe_load(out)["timer_store"] == section(parse_store(docs[1]))


def test_render_reports_a_conflict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = MANIFESTS.split("---\n")[1]
    path = tmp_path / "two.yaml"
    path.write_text(doc + "---\n" + doc.replace("name: locks", "name: locks2"))
    assert main(["render", str(path)]) == 2
    assert "locks, locks2" in capsys.readouterr().err


def test_render_names_an_invalid_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(MANIFESTS.replace("deploymentMode: sentinel", "deploymentMode: replicated"))
    assert main(["render", str(path)]) == 2
    assert "spec.redis.deploymentMode" in capsys.readouterr().err


def test_render_separates_configmaps() -> None:
    out = io.StringIO()
    text = MANIFESTS.replace("configMap: {name: bot-endpoints}\n", "configMap: {name: other}\n", 1)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as handle:
        handle.write(text)
        handle.flush()
        assert render_command([handle.name], "default", out) == 0
    assert "# ConfigMap bots/bot-endpoints key endpoints.yml" in out.getvalue()
    assert "# ConfigMap bots/other key endpoints.yml" in out.getvalue()


def test_check_expands_vars_like_rasa(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURNSTILE_LOCK_STORE_PASSWORD", "pw")
    data = read_endpoints("lock_store:\n  password: ${TURNSTILE_LOCK_STORE_PASSWORD}\n"
                          "  quoted: '${NOT_EXPANDED}'\n")
    assert data["lock_store"] == {"password": "pw", "quoted": "${NOT_EXPANDED}"}


def test_check_refuses_an_unset_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TURNSTILE_LOCK_STORE_PASSWORD", raising=False)
    path = tmp_path / "endpoints.yml"
    path.write_text("lock_store:\n  type: concurrent_redis\n  host: r\n"
                    "  password: ${TURNSTILE_LOCK_STORE_PASSWORD}\n")
    assert main(["check", str(path)]) == 2
    assert "TURNSTILE_LOCK_STORE_PASSWORD" in capsys.readouterr().err


def test_check_fails_for_an_unreachable_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "endpoints.yml"
    path.write_text("lock_store:\n  type: turnstile.rasa.TicketLockStore\n  host: 127.0.0.1\n"
                    "  port: 1\ntimer_store:\n  type: in_memory\n")
    assert main(["check", "--timeout", "1", str(path)]) == 1
    out = capsys.readouterr().out
    assert "lock_store: FAIL Unreachable" in out
    assert "timer_store: skipped" in out


def test_check_without_stores_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "endpoints.yml"
    path.write_text("action_endpoint:\n  url: http://a\n")
    assert main(["check", str(path)]) == 2


def test_operator_subcommand_documents_its_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["operator", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--namespace", "--all-namespaces", "--metrics-port", "--liveness-port",
                 "--peering", "--standalone", "--recheck-interval"):
        assert flag in out


def test_operator_entry_point_loads_store_and_rollout_handlers() -> None:
    code = (
        "import sys, kopf; import turnstile.cli as c;"
        "kopf.run = lambda **kw: print(sorted(m for m in sys.modules "
        "if m.startswith('turnstile.operator.') and 'handlers' in m), kw['clusterwide'],"
        " list(kw['namespaces']), kw['standalone'], kw['liveness_endpoint']);"
        "c.main(['operator', '-n', 'a', '-n', 'b', '--standalone', '--metrics-port', '0',"
        " '--liveness-port', '8081'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    for handlers in ("turnstile.operator.handlers.stores", "turnstile.operator.handlers.rollout"):
        assert f"'{handlers}'" in out
    assert "False ['a', 'b'] True http://0.0.0.0:8081/healthz" in out


def _lock_manifest(prefix: str, duration: int = 600) -> str:
    return (
        "apiVersion: turnstile.dev/v1alpha1\nkind: LockStore\n"
        "metadata: {name: locks, namespace: bots}\n"
        f"spec:\n  redis: {{host: redis, keyPrefix: {prefix}}}\n"
        f"  configMap: {{name: bot-endpoints}}\n  transition: {{durationSeconds: {duration}}}\n"
    )


def test_render_with_transition_from_renders_the_operators_transition(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(_lock_manifest("bot"))
    new.write_text(_lock_manifest("botv2"))
    until = "2026-12-01T18:30:00Z"
    argv = ["render", str(new), "--transition-from", str(old), "--transition-until", until]
    assert main(argv) == 0
    lock = yaml.safe_load(capsys.readouterr().out)["lock_store"]
    assert lock["key_prefix"] == "botv2"
    assert lock["transition_from"] == section(parse_store(yaml.safe_load(_lock_manifest("bot"))))
    assert lock["transition_until"] == until
    assert main(["render", str(new), "--transition-from", str(old), "--transition-until",
                 "+90s"]) == 0  # fmt: skip
    assert "transition_until" in capsys.readouterr().out
    assert main(["render", str(new), "--transition-from", str(new)]) == 0  # nothing moved
    assert "transition_" not in capsys.readouterr().out


def test_render_names_a_moved_password_by_its_own_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    auth = "{host: redis, keyPrefix: %s, passwordSecretRef: {name: %s}}"
    old.write_text(_lock_manifest("bot").replace("{host: redis, keyPrefix: bot}",
                                                 auth % ("bot", "old-auth")))  # fmt: skip
    new.write_text(_lock_manifest("bot").replace("{host: redis, keyPrefix: bot}",
                                                 auth % ("botv2", "new-auth")))  # fmt: skip
    assert main(["render", str(new), "--transition-from", str(old)]) == 0
    lock = yaml.safe_load(capsys.readouterr().out)["lock_store"]
    assert lock["password"] == "${TURNSTILE_LOCK_STORE_PASSWORD}"
    assert lock["transition_from"]["password"] == "${TURNSTILE_LOCK_PREVIOUS_PASSWORD}"


def test_render_transition_from_rasas_own_store_in_an_endpoints_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bot = tmp_path / "endpoints.yml"
    bot.write_text("lock_store:\n  type: concurrent_redis\n  url: redis\n  key_prefix: bot\n"
                   "action_endpoint:\n  url: http://actions:5055/webhook\n")  # fmt: skip
    new = tmp_path / "new.yaml"
    new.write_text(_lock_manifest("bot"))
    assert main(["render", str(new), "--transition-from", str(bot)]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["lock_store"]["transition_from"]["type"] == "concurrent_redis"
    assert out["action_endpoint"] == {"url": "http://actions:5055/webhook"}  # the file is kept
    assert main(["render", str(new), "--transition-until", "soon"]) == 2
    assert "--transition-from" in capsys.readouterr().err
    assert main(["render", str(new), "--transition-from", str(bot),
                 "--transition-until", "soon"]) == 2  # fmt: skip
    assert "--transition-until" in capsys.readouterr().err
