"""Container images for the node tier, made here without a registry.

Nothing can be pulled on the test machines, so every image a node runs is written locally as a
``docker save`` archive (``manifest.json``, a config, one layer tar), which both
``ctr images import`` (the node's containerd) and ``docker load`` read. Archives are cached under
``~/.cache/turnstile/images/`` by a hash of everything that goes into them, so a second run
reuses them.

The first image is the sandbox ("pause") image: Turnstile's own static ``pause`` program
(``hack/pause``, built by ``hack/build-kube.sh``) alone in a layer.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from tests.platform import host_state

__all__ = [
    "DockerBuilder",
    "Image",
    "ImageBuildError",
    "busybox_image",
    "cache_dir",
    "operator_image",
    "pause_image",
    "python_base_image",
    "redis_image",
    "write_archive",
    "write_layered_archive",
]

#: Tags are ``docker.io/...``: CRI normalises every name to that form, and pods name them so.
PAUSE_REPO = "docker.io/turnstile/pause"
BUSYBOX_REPO = "docker.io/turnstile/busybox"
#: Debian's busybox-static (hack/install-node-deps.sh).
BUSYBOX = Path("/bin/busybox")
_BUSYBOX_APPLETS = (
    "sh", "cat", "echo", "env", "sleep", "ls", "hostname", "id", "httpd", "nc",
    "mkdir", "grep", "test", "true", "false", "date", "printf",
)  # fmt: skip


def cache_dir() -> Path:
    """``${TURNSTILE_CACHE:-~/.cache/turnstile}/images``, created on demand."""
    root = Path(os.environ.get("TURNSTILE_CACHE") or Path.home() / ".cache" / "turnstile")
    path = root / "images"
    path.mkdir(parents=True, exist_ok=True)
    return path


class ImageBuildError(RuntimeError):
    """An image could not be built (the message carries the tool's output)."""


#: Archives kept per kind (pause, busybox, python-debian, operator, redis); older ones go.
KEEP_PER_KIND = 3


def _cached(archive: Path) -> bool:
    """True if ``archive`` exists (and marks it used); prunes its kind's least recently used."""
    if not archive.is_file():
        kind = archive.name.rsplit("-", 1)[0]
        others = sorted(
            cache_dir().glob(f"{kind}-*.tar"), key=lambda p: p.stat().st_mtime, reverse=True
        )
        for old in others[KEEP_PER_KIND - 1 :]:
            old.unlink(missing_ok=True)
        return False
    os.utime(archive)
    return True


@dataclass(frozen=True)
class Image:
    """An image archive on disk and the name it carries."""

    name: str
    archive: Path


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pause_image(pause_binary: Path) -> Image:
    """The sandbox image: ``/pause`` and nothing else, tagged by the binary's hash."""
    tag = _file_hash(pause_binary)[:16]
    name = f"{PAUSE_REPO}:{tag}"
    archive = cache_dir() / f"pause-{tag}.tar"
    if not _cached(archive):
        layer = io.BytesIO()
        with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            info = tar.gettarinfo(str(pause_binary), arcname="pause")
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            info.mode = 0o755
            with pause_binary.open("rb") as f:
                tar.addfile(info, f)
        write_archive(
            archive, name, layer.getvalue(), {"Entrypoint": ["/pause"], "User": "65535:65535"}
        )
    return Image(name, archive)


def busybox_image(busybox: Path = BUSYBOX) -> Image:
    """A small image for tests: Debian's static busybox as ``/bin/busybox`` and a shell.

    ``/bin/sh``, ``cat``, ``sleep``, ``nc``, ``httpd``... are links to it; ``/tmp`` exists.
    (Not ``wget``: the static glibc build crashes in it without NSS libraries.)
    """
    tag = _file_hash(busybox)[:16]
    name = f"{BUSYBOX_REPO}:{tag}"
    archive = cache_dir() / f"busybox-{tag}.tar"
    if not _cached(archive):
        layer = io.BytesIO()
        with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for directory, mode in (("bin", 0o755), ("tmp", 0o1777), ("etc", 0o755)):
                info = tarfile.TarInfo(directory)
                info.type, info.mode = tarfile.DIRTYPE, mode
                tar.addfile(info)
            info = tarfile.TarInfo("bin/busybox")
            info.size, info.mode = busybox.stat().st_size, 0o755
            with busybox.open("rb") as f:
                tar.addfile(info, f)
            for applet in _BUSYBOX_APPLETS:
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, "busybox", 0o777
                tar.addfile(info)
        write_archive(
            archive,
            name,
            layer.getvalue(),
            {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"], "WorkingDir": "/"},
        )
    return Image(name, archive)


def write_archive(
    path: Path, name: str, layer: bytes, config: Mapping[str, Any], *, history: Sequence[str] = ()
) -> Path:
    """Write a one-layer ``docker save`` archive of ``layer`` (an uncompressed tar) to ``path``.

    Written to a temp file and renamed, so a cache entry is whole or absent.
    """
    diff_id = hashlib.sha256(layer).hexdigest()
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": dict(config),
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created_by": h} for h in history] or [{"created_by": "turnstile"}],
    }
    config_bytes = json.dumps(image_config, sort_keys=True).encode()
    config_id = hashlib.sha256(config_bytes).hexdigest()
    manifest = [
        {"Config": f"{config_id}.json", "RepoTags": [name], "Layers": [f"{diff_id}/layer.tar"]}
    ]
    members = {
        f"{config_id}.json": config_bytes,
        f"{diff_id}/layer.tar": layer,
        "manifest.json": json.dumps(manifest).encode(),
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out, tarfile.open(fileobj=out, mode="w") as tar:
            for member, data in members.items():
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_layered_archive(
    path: Path,
    name: str,
    layers: Sequence[Path],
    config: Mapping[str, Any],
    *,
    history: Sequence[str] = (),
) -> Path:
    """Like :func:`write_archive`, for layers already written as (uncompressed) tar files,
    lowest first; streamed, so a layer of gigabytes is never held in memory."""
    diff_ids = [_file_hash(layer) for layer in layers]
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": dict(config),
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in diff_ids]},
        "history": [{"created_by": h} for h in history] or [{"created_by": "turnstile"}],
    }
    config_bytes = json.dumps(image_config, sort_keys=True).encode()
    config_id = hashlib.sha256(config_bytes).hexdigest()
    manifest = [
        {
            "Config": f"{config_id}.json",
            "RepoTags": [name],
            "Layers": [f"{d}/layer.tar" for d in diff_ids],
        }
    ]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out, tarfile.open(fileobj=out, mode="w") as tar:
            for member, data in (
                (f"{config_id}.json", config_bytes),
                ("manifest.json", json.dumps(manifest).encode()),
            ):
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            for diff_id, layer in zip(diff_ids, layers, strict=True):
                tar.add(str(layer), arcname=f"{diff_id}/layer.tar", recursive=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def extract_layers(archive: Path, into: Path) -> list[Path]:
    """The layer tars of a ``docker save`` archive, copied into ``into`` (lowest first)."""
    with tarfile.open(archive) as tar:
        manifest = json.load(cast(IO[bytes], tar.extractfile("manifest.json")))
        out = []
        for i, member in enumerate(manifest[0]["Layers"]):
            target = into / f"base-{i}.tar"
            source = tar.extractfile(member)
            assert source is not None
            with target.open("wb") as f:
                shutil.copyfileobj(source, f, 1 << 20)
            out.append(target)
    return out


# ------------------------------------------------------------------- images built from Debian

#: The Python base: Debian bookworm's own Python (3.11) and pip, made by debootstrap. Passed
#: to the repo's Dockerfile as PYTHON_IMAGE instead of python:3.12-slim (no registry here).
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("TURNSTILE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASE_REPO = "docker.io/turnstile/python-debian"
BASE_PACKAGES: tuple[str, ...] = ("python3", "python3-pip", "ca-certificates")
#: Bump when the recipe below changes in a way the package list does not show.
_BASE_RECIPE = "2: minbase, EXTERNALLY-MANAGED removed, apt lists dropped, host CA bundle"
#: The host's CA bundle goes into the base image: pip and apt in the builds then trust what the
#: host trusts (on machines whose egress passes a TLS-inspecting proxy, its CA too).
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def _hash_strings(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def python_base_image() -> Image:
    """Debian bookworm (``debootstrap --variant=minbase``) with python3 and pip, one layer.

    The CA bundle is the host's (see :data:`HOST_CA_BUNDLE`).

    Debian marks its Python EXTERNALLY-MANAGED (PEP 668), which would refuse the Dockerfile's
    ``pip install`` into the system; the marker is removed, so pip installs under /usr/local as
    it does in the python:*-slim images.
    """
    ca_hash = _file_hash(HOST_CA_BUNDLE) if HOST_CA_BUNDLE.is_file() else "none"
    tag = _hash_strings(_BASE_RECIPE, DEBIAN_SUITE, DEBIAN_MIRROR, ca_hash, *BASE_PACKAGES)
    name = f"{BASE_REPO}:{tag}"
    archive = cache_dir() / f"python-debian-{tag}.tar"
    if _cached(archive):
        return Image(name, archive)
    workdir = Path(tempfile.mkdtemp(prefix="turnstile-rootfs-", dir="/var/tmp"))
    try:
        _debootstrap_archive(workdir, name, archive)
    finally:
        # debootstrap mounts /proc and /sys in the rootfs while it works; a failed run may not
        # have unmounted them, and rmtree must never descend into a live /proc or /sys.
        for sub in ("proc", "sys"):
            mounted = workdir / "rootfs" / sub
            if os.path.ismount(mounted):
                subprocess.run(["umount", "-l", str(mounted)], check=False, timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
    return Image(name, archive)


def _debootstrap_archive(workdir: Path, name: str, archive: Path) -> None:
    rootfs = workdir / "rootfs"
    _run_checked(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            DEBIAN_SUITE,
            str(rootfs),
            DEBIAN_MIRROR,
        ],
        timeout=900,
    )
    if HOST_CA_BUNDLE.is_file():
        shutil.copyfile(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
    for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    for pattern in ("var/lib/apt/lists/*", "var/cache/apt/archives/*.deb", "var/log/*.log"):
        for path in rootfs.glob(pattern):
            if path.is_file():
                path.unlink()
    layer = workdir / "layer.tar"
    _run_checked(
        [
            "tar",
            "--numeric-owner",
            "-C",
            str(rootfs),
            "-cf",
            str(layer),
            "--exclude=./dev/*",
            "--exclude=./proc/*",
            "--exclude=./sys/*",
            ".",
        ],
        timeout=300,
    )
    write_archive(
        archive,
        name,
        layer.read_bytes(),
        {
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"],
            "Cmd": ["python3"],
        },
        history=[f"debootstrap --variant=minbase {DEBIAN_SUITE} +{','.join(BASE_PACKAGES)}"],
    )


def _run_checked(argv: Sequence[str], timeout: float, **kwargs: Any) -> str:
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if proc.returncode != 0:
        raise ImageBuildError(
            f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n"
            f"{proc.stderr[-3000:]}"
        )
    return proc.stdout


# -------------------------------------------------------------- images built by a private dockerd

OPERATOR_REPO = "docker.io/turnstile/operator"
REDIS_REPO = "docker.io/turnstile/redis"
REPO_ROOT = Path(__file__).resolve().parents[2]
#: What the repo's Dockerfile reads (its .dockerignore lets exactly these in).
OPERATOR_INPUTS: tuple[str, ...] = (
    "Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "LICENSE",
    "requirements/ci.txt", "turnstile",
)  # fmt: skip

# Debian's redis-server and redis-sentinel (7.0) on the same Debian base, as the `redis` user,
# made first with a fixed numeric id (runAsNonRoot can only verify a numeric USER).
_REDIS_DOCKERFILE = """\
ARG BASE
FROM ${BASE}
RUN groupadd --system --gid 999 redis \\
 && useradd --system --uid 999 --gid 999 --home-dir /var/lib/redis \\
        --shell /usr/sbin/nologin redis \\
 && apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
        redis-server redis-sentinel redis-tools \\
 && rm -rf /var/lib/apt/lists/*
USER 999:999
WORKDIR /var/lib/redis
ENTRYPOINT ["redis-server"]
"""


def _tree_hash(root: Path, names: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for name in names:
        path = root / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            if "__pycache__" in f.parts or f.suffix == ".pyc":
                continue
            digest.update(str(f.relative_to(root)).encode() + b"\0")
            digest.update(_file_hash(f).encode())
    return digest.hexdigest()[:16]


def operator_image(base: Image, builder: DockerBuilder | None = None) -> Image:
    """The operator image from the repo's Dockerfile, ``PYTHON_IMAGE`` = ``base``.

    The Dockerfile is used as it is but for its first line, ``# syntax=docker/dockerfile:1``:
    that directive makes BuildKit fetch its frontend from a registry, and none is reachable.
    dockerd's built-in frontend reads the rest (``RUN --mount`` included) the same way.
    """
    tag = _hash_strings(base.name, _tree_hash(REPO_ROOT, OPERATOR_INPUTS))
    name = f"{OPERATOR_REPO}:{tag}"
    archive = cache_dir() / f"operator-{tag}.tar"
    if _cached(archive):
        return Image(name, archive)
    with _builder(builder) as docker:
        docker.load(base)
        lines = (REPO_ROOT / "Dockerfile").read_text().splitlines(keepends=True)
        dockerfile = docker.dir / "Dockerfile.operator"
        dockerfile.write_text("".join(line for line in lines if not line.startswith("# syntax=")))
        docker.build(name, REPO_ROOT, dockerfile, {"PYTHON_IMAGE": base.name})
        docker.save(name, archive)
    return Image(name, archive)


def redis_image(base: Image, builder: DockerBuilder | None = None) -> Image:
    """Debian's redis-server (and redis-sentinel) on ``base``."""
    tag = _hash_strings(base.name, _REDIS_DOCKERFILE)
    name = f"{REDIS_REPO}:{tag}"
    archive = cache_dir() / f"redis-{tag}.tar"
    if _cached(archive):
        return Image(name, archive)
    with _builder(builder) as docker:
        docker.load(base)
        context = docker.dir / "redis-context"
        context.mkdir(exist_ok=True)
        (context / "Dockerfile").write_text(_REDIS_DOCKERFILE)
        docker.build(name, context, context / "Dockerfile", {"BASE": base.name})
        docker.save(name, archive)
    return Image(name, archive)


@contextlib.contextmanager
def _builder(builder: DockerBuilder | None) -> Iterator[DockerBuilder]:
    if builder is not None:
        yield builder
        return
    with DockerBuilder() as own:
        yield own


class DockerBuilder:
    """A private dockerd (Debian's docker.io) for ``docker build``, started only while building.

    Its data, exec root and socket are in a temp dir; no bridge, no iptables rules, no IP
    forwarding; builds use the host network (PyPI and Debian's mirror for pip and apt). The
    host is recorded before and restored after (:mod:`tests.platform.host_state`), under the
    node tier's lock, so a build never overlaps a running node.
    """

    def __init__(self, start_timeout: float = 60.0) -> None:
        self.start_timeout = start_timeout
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._before: host_state.HostState | None = None
        self._lock: Any = None

    @property
    def dir(self) -> Path:
        """The builder's temp dir (data root, socket, logs); starts dockerd on first use."""
        if self._dir is None:
            self._ensure_started()
        assert self._dir is not None
        return self._dir

    def __enter__(self) -> DockerBuilder:
        """Nothing starts yet: dockerd starts at the first build (a warm cache needs none)."""
        return self

    def _ensure_started(self) -> None:
        if self._dir is not None:
            return
        from tests.platform.node import _HostLock  # noqa: PLC0415  (node imports this module)

        self._lock = _HostLock()
        self._lock.acquire(timeout=300)
        self._start()

    def _start(self) -> None:
        self._before = host_state.snapshot()
        self._dir = Path(tempfile.mkdtemp(prefix="turnstile-docker-", dir="/var/tmp"))
        with (self.dir / "dockerd.log").open("wb") as log:
            self._proc = subprocess.Popen(
                [
                    "dockerd",
                    f"--data-root={self.dir / 'data'}",
                    f"--exec-root={self.dir / 'exec'}",
                    f"--pidfile={self.dir / 'docker.pid'}",
                    f"--host=unix://{self.dir / 'docker.sock'}",
                    f"--config-file={self.dir / 'daemon.json'}",
                    "--storage-driver=overlay2",
                    "--iptables=false",
                    "--ip-forward=false",
                    "--ip-masq=false",
                    "--bridge=none",
                    "--exec-opt=native.cgroupdriver=cgroupfs",
                    "--cgroup-parent=turnstile-docker",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "DOCKER_RAMDISK": ""},
            )
        (self.dir / "daemon.json").write_text("{}")
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if self._docker(["info"], check=False, timeout=10).returncode == 0:
                return
            time.sleep(0.5)
        raise ImageBuildError(f"dockerd did not start:\n{self._log_tail()}")

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=10)
        if self._dir is not None:
            _kill_marked(str(self._dir))  # dockerd's containerd and shims leave its group
            errors = []
            if self._before is not None:
                errors = host_state.restore(self._before, mount_prefixes=[str(self._dir)])
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
            if errors:
                raise ImageBuildError(f"the host was not restored after dockerd: {errors}")
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _log_tail(self) -> str:
        try:
            return "\n".join((self.dir / "dockerd.log").read_text().splitlines()[-30:])
        except OSError:
            return "<no log>"

    def _docker(
        self, args: Sequence[str], *, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DOCKER_BUILDKIT": "1", "DOCKER_CONFIG": str(self.dir / "cli")}
        proc = subprocess.run(
            ["/usr/bin/docker", "-H", f"unix://{self.dir / 'docker.sock'}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
        if check and proc.returncode != 0:
            raise ImageBuildError(
                f"docker {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
                f"{proc.stderr[-3000:]}"
            )
        return proc

    def load(self, image: Image) -> None:
        self._ensure_started()
        self._docker(["load", "-i", str(image.archive)], timeout=300)

    def build(self, name: str, context: Path, dockerfile: Path, args: Mapping[str, str]) -> None:
        argv = ["build", "--network=host", "--progress=plain", "-t", name, "-f", str(dockerfile)]
        for key, value in args.items():
            argv += ["--build-arg", f"{key}={value}"]
        self._docker([*argv, str(context)], timeout=1200)

    def save(self, name: str, archive: Path) -> None:
        tmp = archive.with_name(f".{archive.name}.tmp")
        self._docker(["save", "-o", str(tmp), name], timeout=300)
        os.replace(tmp, archive)


def _kill_marked(marker: str) -> None:
    """SIGKILL every process whose command line mentions ``marker`` (a unique temp dir)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if marker.encode() in (proc / "cmdline").read_bytes():
                    os.kill(int(proc.name), signal.SIGKILL)


def tier_images() -> tuple[Image, Image, Image]:
    """The Debian base, the operator (from the ``Dockerfile``) and Redis, built or found in
    the cache; one ``dockerd`` for the two that are built."""
    base = python_base_image()
    with DockerBuilder() as builder:
        return base, operator_image(base, builder), redis_image(base, builder)


def main() -> int:
    """``python -m tests.platform.images``: build (or find cached) the tier's images and say
    where they are; ``make demo`` runs it beside the Go build so the demo finds them ready."""
    began = time.monotonic()
    built = tier_images()
    for image in built:
        print(f"{image.name}  {image.archive}")
    print(f"images ready in {time.monotonic() - began:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
