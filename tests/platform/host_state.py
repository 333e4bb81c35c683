"""What a node changes on the host, recorded before it starts and put back when it stops.

kubelet, kube-proxy, containerd and the CNI plugins write to the machine they run on, not only
to the tier's temp dir: sysctls (kubelet's kernel defaults, kube-proxy's ``route_localnet`` and
conntrack, the bridge plugin's ``ip_forward``), iptables chains in every table and both address
families, mounts (the kubelet root, network namespaces, container root filesystems), cgroups,
the bridge device, and a few fixed paths (``/var/lib/kubelet``, ``/var/log/containers``,
``/run/containerd``...). A test machine shared with other work must come out of a run as it went
in, also when the run failed or was killed.

So :func:`snapshot` records all of it as plain JSON-able data, :func:`restore` puts a snapshot
back (idempotent, safe to run after a ``kill -9`` of the run that took it), and :func:`diff`
lists what still differs, in words, for tests and ``cluster down`` to assert on.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["HostState", "diff", "restore", "snapshot"]

#: Writable sysctls a node may change (globs under /proc/sys).
SYSCTL_GLOBS: tuple[str, ...] = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/*/route_localnet",
    "net/ipv4/conf/*/forwarding",
    "net/ipv6/conf/all/forwarding",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_*",
    "net/netfilter/nf_conntrack_udp_timeout*",
)

#: Host paths the node's components write to whatever their configuration says.
WATCHED_PATHS: tuple[str, ...] = (
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/var/lib/cni",
    "/run/containerd",
    "/run/netns",
    "/etc/cni",
    "/opt/cni",
    "/var/lib/containerd",
    "/var/lib/docker",
    "/run/docker",
    "/etc/docker",
)

#: Mount points under these prefixes that appear during a run are the node's to unmount.
MOUNT_PREFIXES: tuple[str, ...] = ("/var/lib/kubelet", "/run/netns", "/run/containerd")

#: New cgroups whose path has one of these parts are the node's (its cgroup root, pods).
CGROUP_PARTS: tuple[str, ...] = (
    "turnstile-node",
    "kubepods",
    "turnstile-docker",
    "docker",
    "buildkit",
)

#: iptables front ends: (save, restore, bare command) per backend and family.
_IPTABLES: tuple[tuple[str, str, str], ...] = (
    ("iptables-nft-save", "iptables-nft-restore", "iptables-nft"),
    ("ip6tables-nft-save", "ip6tables-nft-restore", "ip6tables-nft"),
    ("iptables-legacy-save", "iptables-legacy-restore", "iptables-legacy"),
    ("ip6tables-legacy-save", "ip6tables-legacy-restore", "ip6tables-legacy"),
)

_CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass
class HostState:
    """A snapshot; every field is plain data so it round-trips through JSON."""

    sysctls: dict[str, str] = field(default_factory=dict)
    iptables: dict[str, str] = field(default_factory=dict)
    mounts: list[str] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    paths: dict[str, list[str] | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HostState:
        return cls(**data)


# ----------------------------------------------------------------------------- snapshot


def snapshot() -> HostState:
    """Record the host's state as far as a node can change it."""
    return HostState(
        sysctls=_read_sysctls(),
        iptables=_iptables_dumps(),
        mounts=_mount_points(),
        cgroups=_cgroup_dirs(),
        links=_links(),
        paths={p: _entries(Path(p)) for p in WATCHED_PATHS},
    )


def _read_sysctls() -> dict[str, str]:
    values: dict[str, str] = {}
    for pattern in SYSCTL_GLOBS:
        for path in sorted(glob.glob(f"/proc/sys/{pattern}")):
            with contextlib.suppress(OSError):
                if os.stat(path).st_mode & 0o200:
                    values[path] = Path(path).read_text().strip()
    return values


def _run(argv: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def _iptables_dumps() -> dict[str, str]:
    dumps: dict[str, str] = {}
    for save, _restore, _cmd in _IPTABLES:
        if shutil.which(save):
            proc = _run([save])
            if proc.returncode == 0:
                dumps[save] = proc.stdout
    return dumps


def _mount_points() -> list[str]:
    points: list[str] = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 4:
                points.append(parts[4].encode().decode("unicode_escape"))
    return points


def _cgroup_dirs() -> list[str]:
    dirs: list[str] = []
    if not _CGROUP_ROOT.is_dir():
        return dirs
    for controller in sorted(_CGROUP_ROOT.iterdir()):
        if controller.is_symlink() or not controller.is_dir():
            continue
        for root, subdirs, _files in os.walk(controller):
            dirs.extend(os.path.join(root, d) for d in subdirs)
    return sorted(dirs)


def _links() -> list[str]:
    return sorted(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else []


def _entries(path: Path) -> list[str] | None:
    if not path.is_dir():
        return None
    return sorted(os.listdir(path))


# ------------------------------------------------------------------------------ restore


def restore(
    before: HostState, *, link_names: Iterable[str] = (), mount_prefixes: Iterable[str] = ()
) -> list[str]:
    """Put the host back as ``before`` recorded it; return what could not be put back.

    Processes of the node must be gone (their cgroups are removed). Order matters: mounts
    first (a mounted netns pins its veth, a mounted rootfs pins its cgroup's files), then
    cgroups, devices, paths, and last the kernel settings and iptables rules that tearing
    the rest down may itself have touched.
    """
    errors: list[str] = []
    _unmount_new(before, (*MOUNT_PREFIXES, *mount_prefixes), errors)
    _remove_new_cgroups(before, errors)
    for name in link_names:
        if name not in before.links and os.path.exists(f"/sys/class/net/{name}"):
            proc = _run(["ip", "link", "delete", name])
            if proc.returncode != 0:
                errors.append(f"ip link delete {name}: {proc.stderr.strip()}")
    _restore_paths(before, errors)
    _restore_sysctls(before, errors)
    _restore_iptables(before, errors)
    return errors


def _unmount_new(before: HostState, prefixes: tuple[str, ...], errors: list[str]) -> None:
    old = set(before.mounts)
    # Deepest first, each at most a few times: a mount can be stacked on the same point.
    for _ in range(5):
        new = [
            m
            for m in _mount_points()
            if m not in old and any(m == p or m.startswith(p + "/") for p in prefixes)
        ]
        if not new:
            return
        for point in sorted(set(new), key=len, reverse=True):
            proc = _run(["umount", point])
            if proc.returncode != 0:
                _run(["umount", "-l", point])
    left = [m for m in _mount_points() if m not in old and m.startswith(prefixes)]
    if left:
        errors.append(f"mounts left: {left}")


def _remove_new_cgroups(before: HostState, errors: list[str]) -> None:
    old = set(before.cgroups)
    new = [
        d
        for d in _cgroup_dirs()
        if d not in old and any(part in d.split("/") for part in CGROUP_PARTS)
    ]
    if not new:
        return
    # Kill everything still inside (containers outlive a killed kubelet and shim), then wait,
    # bounded, for the kernel to empty the cgroups: rmdir of a cgroup with a dying task fails.
    deadline = time.monotonic() + 15
    while True:
        busy = [d for d in new if _kill_cgroup(Path(d))]
        if not busy or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    failed: list[str] = []
    for directory in sorted(new, key=lambda d: d.count("/"), reverse=True):
        for attempt in range(10):
            try:
                os.rmdir(directory)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if attempt == 9:
                    failed.append(f"{directory} ({exc.strerror})")
                else:
                    time.sleep(0.1)
    if failed:
        errors.append(f"{len(failed)} cgroups not removed, e.g. {failed[:3]}")


def _kill_cgroup(directory: Path) -> bool:
    """SIGKILL whatever is still in a cgroup the node created; True if anything was there."""
    try:
        pids = (directory / "cgroup.procs").read_text().split()
    except OSError:
        return False
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(int(pid), 9)
    return bool(pids)


def _restore_paths(before: HostState, errors: list[str]) -> None:
    for name, entries in before.paths.items():
        path = Path(name)
        try:
            if entries is None:
                if path.is_symlink() or path.is_file():
                    path.unlink()
                elif path.exists():
                    shutil.rmtree(path)
                continue
            if not path.is_dir():
                continue
            for entry in sorted(set(os.listdir(path)) - set(entries)):
                child = path / entry
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        except OSError as exc:
            errors.append(f"{name}: {exc}")


def _restore_sysctls(before: HostState, errors: list[str]) -> None:
    for path, value in before.sysctls.items():
        try:
            if Path(path).read_text().strip() != value:
                Path(path).write_text(value + "\n")
        except FileNotFoundError:
            pass  # an interface's setting, gone with the interface
        except OSError as exc:
            errors.append(f"sysctl {path}: {exc}")


def _restore_iptables(before: HostState, errors: list[str]) -> None:
    now = _iptables_dumps()
    for save, restore_cmd, cmd in _IPTABLES:
        if save not in now:
            continue
        saved_tables = _tables(before.iptables.get(save, ""))
        for table, lines in _tables(now[save]).items():
            if table in saved_tables:
                if _normalised(lines) == _normalised(saved_tables[table]):
                    continue
                block = "\n".join([f"*{table}", *saved_tables[table], "COMMIT", ""])
                proc = _run([restore_cmd], stdin=block)
                if proc.returncode != 0:
                    errors.append(f"{restore_cmd} {table}: {proc.stderr.strip()}")
            else:
                if not _is_empty(lines):
                    _empty_table(cmd, table, lines, errors)
                _delete_nft_table(save, table)


def _empty_table(cmd: str, table: str, lines: list[str], errors: list[str]) -> None:
    """A table the node created: flush it, delete its chains, built-in policies back to ACCEPT."""
    for argv in ([cmd, "-t", table, "-F"], [cmd, "-t", table, "-X"]):
        proc = _run(argv)
        if proc.returncode != 0:
            errors.append(f"{' '.join(argv)}: {proc.stderr.strip()}")
    for line in lines:
        if line.startswith(":") and not line.split()[1].startswith("-"):
            chain = line[1:].split()[0]
            _run([cmd, "-t", table, "-P", chain, "ACCEPT"])


def _delete_nft_table(save: str, table: str) -> None:
    """With the nft backend an emptied table stays listed; ``nft`` (if installed) removes it."""
    if "-nft-" in save and shutil.which("nft"):
        family = "ip6" if save.startswith("ip6") else "ip"
        _run(["nft", "delete", "table", family, table])


def _tables(dump: str) -> dict[str, list[str]]:
    tables: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in dump.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:].strip(), [])
        elif line.strip() == "COMMIT" or line.startswith("#"):
            current = None if line.strip() == "COMMIT" else current
        elif current is not None and line.strip():
            current.append(line)
    return tables


_COUNTERS = re.compile(r"\[\d+:\d+\]")


def _normalised(lines: Iterable[str]) -> list[str]:
    return sorted(_COUNTERS.sub("", line).strip() for line in lines)


def _is_empty(lines: Sequence[str]) -> bool:
    """Only built-in chains with policy ACCEPT, no user chain, no rule: as if absent."""
    return all(line.startswith(":") and line.split()[1] == "ACCEPT" for line in lines)


# --------------------------------------------------------------------------------- diff


def diff(before: HostState, after: HostState | None = None) -> list[str]:
    """What differs between ``before`` and ``after`` (default: now), one sentence each."""
    after = after or snapshot()
    out: list[str] = []
    for path, value in before.sysctls.items():
        now = after.sysctls.get(path)
        if now is not None and now != value:
            out.append(f"sysctl {path}: {value} before, {now} now")
    for save in sorted(set(before.iptables) | set(after.iptables)):
        old, new = _tables(before.iptables.get(save, "")), _tables(after.iptables.get(save, ""))
        for table in sorted(set(old) | set(new)):
            a, b = old.get(table, []), new.get(table, [])
            if _normalised(a) != _normalised(b) and not (_is_empty(a) and _is_empty(b)):
                extra = sorted(set(_normalised(b)) - set(_normalised(a)))
                out.append(f"{save} table {table} differs (new lines: {extra[:5]})")
    new_mounts = sorted(set(after.mounts) - set(before.mounts))
    if new_mounts:
        out.append(f"new mounts: {new_mounts[:10]}")
    # Only the tier's own (CGROUP_PARTS): other software on the host makes cgroups while a run
    # goes on (a process supervisor's per-command cgroups, say), and those are not ours to undo.
    new_cgroups = sorted(
        d
        for d in set(after.cgroups) - set(before.cgroups)
        if any(part in d.split("/") for part in CGROUP_PARTS)
    )
    if new_cgroups:
        out.append(f"new cgroups: {new_cgroups[:10]}")
    new_links = sorted(set(after.links) - set(before.links))
    if new_links:
        out.append(f"new network links: {new_links}")
    for path, entries in before.paths.items():
        now_entries = after.paths.get(path)
        if entries is None and now_entries is not None:
            out.append(f"{path} exists now, did not before")
        elif entries is not None and now_entries is not None and set(now_entries) - set(entries):
            out.append(f"{path} has new entries {sorted(set(now_entries) - set(entries))[:10]}")
    return out
