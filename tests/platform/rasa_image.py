"""The node tier's Rasa images: a Rasa venv made here, its Python, and Turnstile's wheel.

Two images, one recipe (:class:`Recipe`):

* the bot image (:func:`rasa_bot_image`): Rasa Open Source 3.6.21 whole
  (``.venv-rasa-server``, Python 3.10, ``hack/rasa-server-venv.sh``), entrypoint
  ``turnstile-rasa``;
* the timer-harness image (:func:`rasa_pro_timer_image`): Rasa Pro 3.21's minimal pinned install
  (``.venv-rasa-pro311``, Python 3.11, ``hack/rasa-venvs.sh pro311``). Rasa Pro's ``rasa run``
  needs a licence, so its pods run the harness of ``tests/rasa/timer_pods.py`` (Rasa Pro's own
  timer-manager code in process) with the image's Python as the entrypoint.

Made here without a registry or a Docker build (:mod:`tests.platform.images`), from what the
Rasa tiers already installed, as three layers:

1. the Debian base (:func:`tests.platform.images.python_base_image`): the C libraries;
2. the Python the venv was made from (a pyenv build) at ``/opt/python3.X`` and the venv's
   packages at ``/opt/rasa``: exactly its pins file, minus the editable Turnstile the tiers run;
3. Turnstile: the wheel built from this checkout (as ``make dist`` builds it) installed into
   ``/opt/rasa``, and the ``turnstile-rasa`` launcher.

Layer 2 changes only with the pins (up to gigabytes for Rasa OSS), so its tar is cached by
their hash; layer 3 is rebuilt when the package's files change. The images run as uid 1001
(Rasa's images do the same) with ``/app`` as their writable working directory.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.platform.images import (
    REPO_ROOT,
    Image,
    ImageBuildError,
    _cached,
    _file_hash,
    _hash_strings,
    _tree_hash,
    cache_dir,
    extract_layers,
    write_layered_archive,
)

__all__ = [
    "RASA_BOT_REPO",
    "RASA_PREFIX",
    "RASA_PRO_TIMER_REPO",
    "Recipe",
    "rasa_bot_image",
    "rasa_pro_timer_image",
]

RASA_BOT_REPO = "docker.io/turnstile/rasa-bot"
RASA_PRO_TIMER_REPO = "docker.io/turnstile/rasa-pro-timers"
RASA_PREFIX = "/opt/rasa"
USER = 1001
#: Bump when the recipe of a layer changes in a way its inputs do not show.
_RECIPE = "1"
WHEEL_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "turnstile")
_SHEBANG = re.compile(rb"^#!(\S*/bin/python[0-9.]*)")


def _mode(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _dirs(tar: tarfile.TarFile, path: str, mode: int = 0o755, uid: int = 0) -> None:
    parts = path.strip("/").split("/")
    for i in range(1, len(parts) + 1):
        info = tarfile.TarInfo("/".join(parts[:i]))
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, 0
        info.uid = info.gid = uid if i == len(parts) else 0
        tar.addfile(info)


def _walk(root: Path, skip: re.Pattern[str] | None = None) -> Iterator[Path]:
    if not root.is_dir():
        yield root
        return
    for directory, dirnames, filenames in os.walk(root):
        here = Path(directory)
        rel_dir = here.relative_to(root).as_posix()
        if skip is not None:
            dirnames[:] = [d for d in dirnames if not skip.search(f"{rel_dir}/{d}/")]
        dirnames.sort()
        yield here
        for name in sorted(filenames):
            path = here / name
            if skip is None or not skip.search(path.relative_to(root).as_posix()):
                yield path


def _add_tree(
    tar: tarfile.TarFile,
    source: Path,
    target: str,
    *,
    skip: re.Pattern[str] | None = None,
    links: tuple[str, str] | None = None,
    shebang: bytes | None = None,
) -> None:
    """``source`` at ``target`` in the layer; symlinks into ``links[0]`` point into
    ``links[1]``; a script whose first line is ``#!.../bin/python`` gets ``shebang``."""
    for path in _walk(source, skip):
        rel = path.relative_to(source).as_posix() if path != source else "."
        arcname = target.strip("/") if rel == "." else f"{target.strip('/')}/{rel}"
        info = _mode(tar.gettarinfo(str(path), arcname=arcname))
        if info.issym() and links is not None and info.linkname.startswith(links[0]):
            info.linkname = links[1] + info.linkname[len(links[0]) :]
        if info.isfile() and shebang is not None and path.parent.name == "bin":
            data = path.read_bytes()
            if _SHEBANG.match(data):
                data = _SHEBANG.sub(b"#!" + shebang, data, count=1)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
        if info.isfile():
            with path.open("rb") as f:
                tar.addfile(info, f)
        else:
            tar.addfile(info)


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name.strip("/"))
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def _venv_cfg(venv: Path, key: str) -> str:
    found = re.search(rf"^{key}\s*=\s*(.+)$", (venv / "pyvenv.cfg").read_text(), re.MULTILINE)
    if not found:
        raise ImageBuildError(f"{venv}/pyvenv.cfg names no {key}")
    return found.group(1).strip()


def _python_home(venv: Path) -> Path:
    return Path(_venv_cfg(venv, "home")).parent


def _python_minor(venv: Path) -> str:
    """``python3.X`` of the interpreter the venv was made from."""
    return "python" + ".".join(_venv_cfg(venv, "version").split(".")[:2])


#: Not copied from the venv: the tier's editable Turnstile (layer 3 has the wheel), caches.
_VENV_SKIP = re.compile(
    r"__editable__|rasa_turnstile[^/]*\.dist-info/|(^|/)__pycache__/.*\.opt-\d\.pyc$"
)


def _python_skip(python: str) -> re.Pattern[str]:
    """Not copied from the interpreter: its own site-packages (the venv has its own), tests."""
    return re.compile(rf"^lib/{re.escape(python)}/(site-packages|test|idlelib|tkinter|lib2to3)/")


def _rasa_layer(venv: Path, layer: Path) -> None:
    home, python = _python_home(venv), _python_minor(venv)
    python_home = f"/opt/{python}"
    with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
        _dirs(tar, "opt")
        _add_tree(tar, home, python_home, skip=_python_skip(python))
        cfg = (venv / "pyvenv.cfg").read_text().replace(str(home), python_home)
        _add_tree(
            tar,
            venv,
            RASA_PREFIX,
            skip=re.compile(_VENV_SKIP.pattern + r"|^pyvenv\.cfg$"),
            links=(str(home), python_home),
            shebang=f"{RASA_PREFIX}/bin/python".encode(),
        )
        _add_file(tar, f"{RASA_PREFIX}/pyvenv.cfg", cfg.encode())
        _dirs(tar, "app", 0o775, USER)


def _build_wheel(out: Path) -> Path:
    env = {**os.environ, "PIP_CONSTRAINT": str(REPO_ROOT / "requirements" / "ci.txt")}
    done = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(REPO_ROOT)],
        capture_output=True, text=True, timeout=600, env=env, check=False,
    )  # fmt: skip
    wheels = sorted(out.glob("rasa_turnstile-*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        raise ImageBuildError(f"building the wheel failed:\n{done.stdout[-2000:]}{done.stderr}")
    return wheels[0]


def _turnstile_layer(venv: Path, workdir: Path, layer: Path) -> None:
    """The wheel installed into ``/opt/rasa``'s site-packages (a pure-Python wheel: this
    Python's pip unpacks it as the image's would; a venv made ``--without-pip`` has none)."""
    wheel = _build_wheel(workdir / "wheel")
    staging = workdir / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--no-compile", "--target", str(staging), str(wheel)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise ImageBuildError(f"pip install of {wheel.name} failed:\n{done.stderr[-3000:]}")
    shutil.rmtree(staging / "bin", ignore_errors=True)  # scripts with this host's paths
    site = f"{RASA_PREFIX.strip('/')}/lib/{_python_minor(venv)}/site-packages"
    launcher = (
        f"#!{RASA_PREFIX}/bin/python\nimport sys\n"
        "from turnstile.rasa.launcher import main\nsys.exit(main())\n"
    )
    with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(os.listdir(staging)):
            _add_tree(tar, staging / name, f"{site}/{name}")
        _add_file(tar, f"{RASA_PREFIX}/bin/turnstile-rasa", launcher.encode(), 0o755)


@dataclass(frozen=True)
class Recipe:
    """What differs between the Rasa images; the layers are made the same way."""

    repo: str
    kind: str  # the cache archives' name: ``<kind>-<tag>.tar``, ``<kind>-layer-<tag>.tar``
    pins: str  # the venv's pins file, under ``requirements/``
    builder: str  # what makes the venv, for the error a missing venv gives
    what: str  # layer 2 in the image's history
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: tuple[str, ...] = ()


BOT = Recipe(
    repo=RASA_BOT_REPO,
    kind="rasa",
    pins="rasa36-server.txt",
    builder="hack/rasa-server-venv.sh",
    what="python 3.10 + rasa 3.6.21 (pins)",
    entrypoint=(f"{RASA_PREFIX}/bin/turnstile-rasa",),
    cmd=("run", "--help"),
    env=("TF_CPP_MIN_LOG_LEVEL=3",),
)
PRO_TIMERS = Recipe(
    repo=RASA_PRO_TIMER_REPO,
    kind="rasa-pro",
    pins="rasa-pro.txt",
    builder="hack/rasa-venvs.sh pro311",
    what="python 3.11 + rasa pro 3.21 (minimal pins)",
    entrypoint=(f"{RASA_PREFIX}/bin/python",),
    cmd=("-c", "import rasa.core.timer_managers.timer_manager, turnstile.rasa"),
)


def rasa_image(recipe: Recipe, base: Image, venv: Path) -> Image:
    """The image ``recipe`` makes from ``venv`` (see the module's docstring)."""
    if not (venv / "pyvenv.cfg").is_file():
        raise ImageBuildError(f"no Rasa venv at {venv} ({recipe.builder} builds it)")
    pins = _file_hash(REPO_ROOT / "requirements" / recipe.pins)
    python = _python_minor(venv)
    rasa_tag = _hash_strings(_RECIPE, pins, str(_python_home(venv)), Path(__file__).read_text())
    code_tag = _tree_hash(REPO_ROOT, WHEEL_INPUTS)
    tag = _hash_strings(base.name, rasa_tag, code_tag)
    name = f"{recipe.repo}:{tag}"
    archive = cache_dir() / f"{recipe.repo.rsplit('/', 1)[1]}-{tag}.tar"
    if _cached(archive):
        return Image(name, archive)
    rasa_layer = cache_dir() / f"{recipe.kind}-layer-{rasa_tag}.tar"
    workdir = Path(tempfile.mkdtemp(prefix="turnstile-rasa-image-", dir="/var/tmp"))
    try:
        if not _cached(rasa_layer):
            partial = workdir / "rasa-layer.tar"
            _rasa_layer(venv, partial)
            shutil.move(partial, rasa_layer)
        code_layer = workdir / "turnstile-layer.tar"
        _turnstile_layer(venv, workdir, code_layer)
        layers = [*extract_layers(base.archive, workdir), rasa_layer, code_layer]
        write_layered_archive(
            archive,
            name,
            layers,
            {
                "Entrypoint": list(recipe.entrypoint),
                "Cmd": list(recipe.cmd),
                "Env": [
                    f"PATH={RASA_PREFIX}/bin:/usr/local/bin:/usr/bin:/bin",
                    f"LD_LIBRARY_PATH=/opt/{python}/lib",
                    "HOME=/app",
                    "RASA_TELEMETRY_ENABLED=false",
                    *recipe.env,
                    "PYTHONUNBUFFERED=1",
                ],
                "User": f"{USER}:0",
                "WorkingDir": "/app",
            },
            history=["debian base", recipe.what, "turnstile wheel"],
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return Image(name, archive)


def rasa_bot_image(base: Image, venv: Path) -> Image:
    """The bot image; ``venv`` is ``.venv-rasa-server``."""
    return rasa_image(BOT, base, venv)


def rasa_pro_timer_image(base: Image, venv: Path) -> Image:
    """The timer-harness image; ``venv`` is ``.venv-rasa-pro311``."""
    return rasa_image(PRO_TIMERS, base, venv)
