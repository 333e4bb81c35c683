"""The built wheel, installed the way the README says, in a fresh venv with nothing else.

One venv for the module: the README's install line is run in it verbatim (parsed out of
README.md), then ``turnstile render`` and ``turnstile check`` run against real Redis, both Rasa
classes load the way Rasa loads a ``type:`` path, and last PyYAML (what the ``[cli]`` extra
adds) is removed so the venv holds the base install alone: the CLI then prints one line naming
the extra, and the Rasa classes still load.

``make test`` builds the artefacts first (``make dist``) and points ``TURNSTILE_DIST_DIR`` at
them; without it the wheel is built here. pip reaches PyPI for redis-py and PyYAML.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

import turnstile
from tests.platform.redis_servers import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
WHEEL = f"rasa_turnstile-{turnstile.__version__}-py3-none-any.whl"


def _readme_install_line() -> str:
    readme = (ROOT / "README.md").read_text()
    lines = re.findall(r"^pip install .*dist/rasa_turnstile.*$", readme, re.M)
    assert len(lines) == 1, f"README.md must have one wheel install line, found {lines}"
    return lines[0]


def _run(*args: str | Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **env}
    full_env.pop("PYTHONPATH", None)
    return subprocess.run(
        [str(a) for a in args], check=False, cwd=cwd, env=full_env, capture_output=True,
        text=True, timeout=300,
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist_dir = os.environ.get("TURNSTILE_DIST_DIR")
    if dist_dir:
        built = Path(dist_dir) / WHEEL
        assert built.is_file(), f"{built} missing: run `make dist`"
        return built
    out = tmp_path_factory.mktemp("dist")
    result = _run(
        sys.executable, "-m", "build", "--wheel", "--outdir", out, ROOT, cwd=ROOT,
        PIP_CONSTRAINT=str(ROOT / "requirements" / "ci.txt"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out / WHEEL


@pytest.fixture(scope="module")
def workdir(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory outside the source tree with the wheel where the README's line expects it,
    and a fresh venv in which that line has been run."""
    work = tmp_path_factory.mktemp("bot-image")
    (work / "dist").mkdir()
    shutil.copy(wheel, work / "dist" / WHEEL)
    venv.create(work / "venv", with_pip=True)
    line = _readme_install_line()
    result = _run("bash", "-c", f"source venv/bin/activate && {line}", cwd=work)
    assert result.returncode == 0, f"{line}\n{result.stdout}{result.stderr}"
    return work


def _installed(work: Path) -> dict[str, str]:
    result = _run(work / "venv/bin/python", "-m", "pip", "list", "--format=freeze", cwd=work)
    assert result.returncode == 0, result.stderr
    return dict(line.split("==", 1) for line in result.stdout.split())


_LOAD_CLASSES = """
import importlib
for path in ("turnstile.rasa.TicketLockStore", "turnstile.rasa.TimerStore"):
    module, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)  # as Rasa's class_from_module_path
    print(path, type(cls()).__name__, cls.__module__, importlib.import_module(module).__file__)
"""


def _load_rasa_classes(work: Path) -> str:
    result = _run(work / "venv/bin/python", "-c", _LOAD_CLASSES, cwd=work)
    assert result.returncode == 0, result.stderr
    assert str(work / "venv") in result.stdout, result.stdout  # the wheel, not the source tree
    return result.stdout


def test_readme_install_line_installs_this_project_from_the_wheel(workdir: Path) -> None:
    installed = _installed(workdir)
    assert installed.get("rasa-turnstile") == turnstile.__version__, installed
    assert "PyYAML" in installed and "redis" in installed, installed
    assert not {"kopf", "kubernetes", "rasa", "rasa-pro"} & set(installed), installed


def test_check_on_a_rendered_endpoints_yml_against_real_redis(
    workdir: Path, redis_server: RedisServer
) -> None:
    manifest = workdir / "stores.yaml"
    manifest.write_text("\n---\n".join(
        f"apiVersion: turnstile.dev/v1alpha1\nkind: {kind}\n"
        f"metadata: {{name: bot-{kind.lower()}}}\n"
        f"spec:\n  redis: {{deploymentMode: standard, host: {redis_server.host}, "
        f"port: {redis_server.port}}}\n  configMap: {{name: bot-endpoints}}\n"
        for kind in ("LockStore", "TimerStore")
    ))
    rendered = _run(workdir / "venv/bin/turnstile", "render", manifest, cwd=workdir)
    assert rendered.returncode == 0, rendered.stderr
    assert "type: turnstile.rasa.TicketLockStore" in rendered.stdout, rendered.stdout
    (workdir / "endpoints.yml").write_text(rendered.stdout)

    checked = _run(workdir / "venv/bin/turnstile", "check", "endpoints.yml", cwd=workdir)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("lock_store: OK standard"), checked.stdout
    assert "\ntimer_store: OK standard" in checked.stdout, checked.stdout


def test_both_rasa_classes_load_from_the_installed_wheel(workdir: Path) -> None:
    out = _load_rasa_classes(workdir)
    assert "turnstile.rasa.TicketLockStore TicketLockStore" in out, out
    assert "turnstile.rasa.TimerStore TimerStore" in out, out


def test_base_install_prints_one_line_naming_the_extra(workdir: Path) -> None:
    # Last in the module: leaves the venv with the base install alone.
    python = workdir / "venv/bin/python"
    removed = _run(python, "-m", "pip", "uninstall", "-y", "PyYAML", cwd=workdir)
    assert removed.returncode == 0, removed.stderr
    installed = set(_installed(workdir))
    assert installed <= {"rasa-turnstile", "redis", "async-timeout", "pip", "setuptools"}, installed

    for argv in (("check", "endpoints.yml"), ("render", "stores.yaml")):
        result = _run(workdir / "venv/bin/turnstile", *argv, cwd=workdir)
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"turnstile {argv[0]}: needs PyYAML" in result.stderr, result.stderr
        assert "pip install 'rasa-turnstile[cli]'" in result.stderr, result.stderr
    _load_rasa_classes(workdir)
