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

import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Image", "busybox_image", "cache_dir", "pause_image", "write_archive"]

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
    if not archive.is_file():
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
    if not archive.is_file():
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
