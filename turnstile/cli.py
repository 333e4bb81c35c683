"""``turnstile``: render and check store configuration without a cluster, or run the operator.

::

    turnstile render FILE...          print the endpoints.yml (or integrations.yml, by
                                      spec.configMap.format) the stores in FILE(s) produce
        [--base FILE]                 ...written into FILE, every other section kept as it is
        [--transition-from PREVIOUS [--transition-until WHEN]]   ...as a change from PREVIOUS
    turnstile check ENDPOINTS_YML     connect to the stores a bot's endpoints.yml declares
        [--acl]                       ... and verify each store user's ACL rule
    turnstile locks show|ls|release   look at conversations' ticket locks (``cli_inspect``)
    turnstile timers show|ls          look at pending session timers
    turnstile operator [...]          run the Kubernetes operator (needs the [operator] extra)

``render`` uses the operator's own pure renderer, so its output is byte for byte what the
operator writes into a ConfigMap that held nothing else. ``check`` reads the file the way Rasa
does (unquoted ``${VAR}`` values expanded from the environment; an unset one is an error) and
probes each Redis store with the store library's probe, the one the operator uses; the exit
status is 0 when every store works, 1 when one does not, 2 for a usage or file error.

The base install (redis-py only, what a bot image needs for the stores) has no YAML parser:
``check`` and ``render`` need the ``[cli]`` extra (PyYAML), ``operator`` the ``[operator]``
extra. A missing one is a usage error naming what to install, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import yaml

    from turnstile.stores.acl import Store

#: The distribution users install; extras are named after it in messages.
DISTRIBUTION = "rasa-turnstile"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_ENV_VAR = re.compile(r"^(.*)\$\{(.*)\}(.*)$")
#: Sections of endpoints.yml that hold a store ``turnstile check`` knows how to probe.
_STORE_SECTIONS = ("lock_store", "timer_store")
_REDIS_TYPES = {
    "lock_store": {"turnstile.rasa.TicketLockStore", "concurrent_redis", "redis"},
    "timer_store": {"turnstile.rasa.TimerStore", "redis"},
}


class _UsageError(Exception):
    pass


def _require_yaml() -> Any:
    """PyYAML, or a usage error naming the extra that brings it."""
    try:
        import yaml  # noqa: PLC0415
    except ModuleNotFoundError:
        raise _UsageError(
            f"needs PyYAML, which the base install leaves out: pip install '{DISTRIBUTION}[cli]'"
        ) from None
    return yaml


# ------------------------------------------------------------------------------ render


def _read_manifests(paths: Sequence[str]) -> list[dict[str, Any]]:
    yaml = _require_yaml()
    documents: list[dict[str, Any]] = []
    for path in paths:
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text()
            loaded = list(yaml.safe_load_all(text))
        except OSError as exc:
            raise _UsageError(f"{path}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise _UsageError(f"{path}: not valid YAML ({exc})") from None
        for doc in loaded:
            if isinstance(doc, dict) and doc.get("kind") == "List":
                documents.extend(i for i in doc.get("items") or [] if isinstance(i, dict))
            elif isinstance(doc, dict):
                documents.append(doc)
    return documents


def _parse_stores(docs: Sequence[dict[str, Any]], namespace: str) -> list[Any]:
    from turnstile.operator.model.errors import OperatorError  # noqa: PLC0415
    from turnstile.operator.model.kinds import GROUP, KINDS  # noqa: PLC0415
    from turnstile.operator.model.specs import parse_store  # noqa: PLC0415

    stores = []
    for doc in docs:
        if doc.get("kind") not in KINDS or not str(doc.get("apiVersion", "")).startswith(GROUP):
            continue  # Secrets, workloads and anything else: not ours to render
        meta = dict(doc.get("metadata") or {})
        meta.setdefault("namespace", namespace)
        try:
            stores.append(parse_store({**doc, "metadata": meta}))
        except OperatorError as exc:
            raise _UsageError(f"{doc['kind']} {meta.get('name')}: {exc.message}") from None
    return stores


def _until(value: str | None, now: datetime) -> datetime | None:
    """``--transition-until``: RFC 3339 with a zone, a Unix timestamp, or ``+SECONDS``."""
    from turnstile.operator.decide.transition import parse_time  # noqa: PLC0415
    from turnstile.operator.model.errors import SpecError  # noqa: PLC0415

    if value is None:
        return None
    if value.startswith("+") and value[1:].rstrip("s").isdigit():
        return now + timedelta(seconds=int(value[1:].rstrip("s")))
    try:
        return parse_time(float(value) if value.replace(".", "", 1).isdigit() else value)
    except SpecError:
        raise _UsageError(
            f"--transition-until: an RFC 3339 time with a zone (2026-12-01T18:30:00Z), a Unix "
            f"timestamp or +SECONDS (got {value!r})"
        ) from None


def _base_text(path: str) -> str:
    """``--base``: the file the sections are written into; it must load as Rasa loads it."""
    from turnstile.operator.decide.render import endpoints_problem  # noqa: PLC0415

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise _UsageError(f"--base {path}: {exc.strerror or exc}") from None
    problem = endpoints_problem(text)
    if problem is not None:
        raise _UsageError(f"--base {path}: {problem} (Rasa needs a YAML mapping of sections)")
    return text


def _previous(
    paths: Sequence[str],
    namespace: str,
    targets: Iterable[Any],
    existing: Mapping[Any, str] | None = None,
) -> tuple[dict[Any, str], dict[Any, list[tuple[str, str, str]]]]:
    """The files as they are before the change: from the previous store manifests (written
    into ``existing``, the ``--base`` file), or an ``endpoints.yml`` (a bot's file with Rasa's
    own ``lock_store``: adopting Turnstile), and the previous LockStores' Secret env vars per
    file."""
    from turnstile.operator.decide.render import render_files, secret_env, target  # noqa: PLC0415
    from turnstile.operator.model.errors import OperatorError  # noqa: PLC0415

    yaml = _require_yaml()
    previous: dict[Any, str] = {}
    env: dict[Any, list[tuple[str, str, str]]] = {}
    for path in paths:
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text()
            loaded = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
        except OSError as exc:
            raise _UsageError(f"--transition-from {path}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise _UsageError(f"--transition-from {path}: not valid YAML ({exc})") from None
        if len(loaded) == 1 and "kind" not in loaded[0]:  # an endpoints.yml, for every target
            previous.update({where: text for where in targets})
            continue
        docs = [i for d in loaded for i in (d.get("items") or [] if d.get("kind") == "List"
                                            else [d]) if isinstance(i, dict)]  # fmt: skip
        try:
            old = _parse_stores(docs, namespace)
            previous.update(render_files(old, existing))
        except OperatorError as exc:
            raise _UsageError(f"--transition-from {path}: {exc.message}") from None
        for store in old:
            where = target(store)
            if where is not None and store.kind == "LockStore":
                env[where] = secret_env(store.kind, store)
    return previous, env


def render_command(
    paths: Sequence[str],
    namespace: str,
    out: TextIO,
    *,
    transition_from: Sequence[str] = (),
    transition_until: str | None = None,
    base: str | None = None,
) -> int:
    """Print the files; with ``transition_from``, as the operator renders the change from the
    previous stores (``transition_from``/``transition_until`` for a lock-affecting one); with
    ``base``, written into that file (a bot's own ``endpoints.yml`` or ``integrations.yml``)
    as the operator writes into a ConfigMap key that holds it: every other byte kept."""
    _require_yaml()  # the renderer imports it
    from turnstile.operator.decide.render import render_files, target  # noqa: PLC0415
    from turnstile.operator.model.errors import OperatorError  # noqa: PLC0415

    stores = _parse_stores(_read_manifests(paths), namespace)
    if not stores:
        raise _UsageError("no LockStore or TimerStore found in " + ", ".join(paths))
    if not any(s.config_map for s in stores):
        raise _UsageError("none of the stores sets spec.configMap, so nothing is rendered")
    if transition_until is not None and not transition_from:
        raise _UsageError("--transition-until needs --transition-from (the previous stores)")
    now = datetime.now(timezone.utc)
    targets = {w for s in stores if (w := target(s)) is not None}
    existing = {where: _base_text(base) for where in targets} if base is not None else {}
    try:
        if transition_from:
            previous, env = _previous(transition_from, namespace, targets, existing)
            files = render_files(
                stores, previous, now=now, until=_until(transition_until, now), previous_env=env
            )
        else:
            files = render_files(stores, existing)
    except OperatorError as exc:
        raise _UsageError(exc.message) from None
    if len(files) == 1:
        out.write(next(iter(files.values())))
        return EXIT_OK
    parts = [f"# {where}\n{text}" for where, text in sorted(files.items())]
    out.write("---\n".join(parts))
    return EXIT_OK


# ------------------------------------------------------------------------------- check


def _expand(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> str:
    value = str(loader.construct_scalar(node))
    expanded = os.path.expandvars(value)
    missing = [w for w in expanded.split() if w.startswith("$") and w in value]
    if missing:
        raise _UsageError(
            f"cannot expand {value!r}: set the environment variable(s) {', '.join(missing)}"
        )
    return expanded


_LOADERS: list[type[yaml.SafeLoader]] = []


def _rasa_loader() -> type[yaml.SafeLoader]:
    """PyYAML with Rasa's ``${VAR}`` rule: plain scalars are expanded from the environment."""
    if not _LOADERS:
        yaml = _require_yaml()

        class _RasaLoader(yaml.SafeLoader):  # type: ignore[name-defined,misc]
            pass

        _RasaLoader.add_implicit_resolver("!env_var", _ENV_VAR, None)
        _RasaLoader.add_constructor("!env_var", _expand)
        _LOADERS.append(_RasaLoader)
    return _LOADERS[0]


def read_endpoints(text: str) -> dict[str, Any]:
    """An endpoints.yml as Rasa reads it (``${VAR}`` expanded); a mapping or a usage error."""
    loader = _rasa_loader()
    yaml = _require_yaml()
    try:
        data = yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        raise _UsageError(f"not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise _UsageError("endpoints.yml must be a mapping of sections")
    return data


class AclCheck:
    """``turnstile check --acl``: who asks ``ACL DRYRUN`` (the store's own user by default)."""

    def __init__(self, admin_user: str | None = None, admin_password: str | None = None) -> None:
        self.admin_user = admin_user
        self.admin_password = admin_password

    def __repr__(self) -> str:  # never the password
        return f"AclCheck(admin_user={self.admin_user!r})"


async def _check_acl(name: str, settings: Any, master: str | None, acl: AclCheck,
                     out: TextIO) -> bool:
    """Print whether the store's user has the documented ACL rule; True if it has."""
    import redis.asyncio as aioredis  # noqa: PLC0415
    from redis import exceptions as rex  # noqa: PLC0415
    from redis.credentials import UsernamePasswordCredentialProvider  # noqa: PLC0415

    from turnstile.stores._redis.credentials import credential_provider  # noqa: PLC0415
    from turnstile.stores.acl import (  # noqa: PLC0415
        key_pattern,
        missing_permissions,
        permissions,
    )

    store: Store = "timer_store" if name == "timer_store" else "lock_store"
    cluster = settings.deployment_mode == "cluster"
    user = settings.username or "default"
    if settings.deployment_mode == "standard":
        targets = [(settings.host, settings.port)]
    elif cluster:
        targets = list(settings.endpoints)
    else:
        host, _, port = (master or "").rpartition(":")
        targets = [(host, int(port))] if host else []
    provider = (
        UsernamePasswordCredentialProvider(acl.admin_user, acl.admin_password)
        if acl.admin_password is not None else credential_provider(settings)
    )
    extra = settings.tls_kwargs() if settings.use_ssl else {}
    missing: list[str] = []
    for host, port in targets:
        client = aioredis.Redis(
            host=host, port=port, credential_provider=provider, decode_responses=True,
            socket_timeout=settings.connect_timeout, **extra,
        )
        try:
            missing += [f"{host}:{port}: {m}" if cluster else m for m in await missing_permissions(
                client, user, store, settings.key_prefix, cluster=cluster
            )]
        except rex.NoPermissionError:
            out.write(
                f"{name}: ACL FAIL cannot verify: the connecting user may not run ACL DRYRUN "
                "(pass --acl-admin-user and --acl-admin-password-env for a user that may)\n"
            )
            return False
        except (rex.RedisError, OSError) as exc:
            out.write(f"{name}: ACL FAIL cannot verify on {host}:{port}: {type(exc).__name__}\n")
            return False
        finally:
            # ``aclose`` arrived in redis-py 5; 4.5 has ``close``.
            await (getattr(client, "aclose", None) or client.close)()
    for line in missing:
        out.write(f"{name}: ACL FAIL {line}\n")
    if not missing:
        count = len(permissions(store, cluster=cluster))
        out.write(
            f"{name}: ACL OK user {user!r} may run all {count} commands of the {store} rule "
            f"on keys {key_pattern(store, settings.key_prefix)}\n"
        )
    return not missing


async def _check_sections(
    data: dict[str, Any], timeout: float, out: TextIO, acl: AclCheck | None = None
) -> int:
    from turnstile.stores.config import (  # noqa: PLC0415
        RedisSettings,
        SettingsReader,
        default_db,
    )
    from turnstile.stores.errors import ConfigurationError  # noqa: PLC0415
    from turnstile.stores.probe import probe  # noqa: PLC0415

    checked = failed = 0
    for name in _STORE_SECTIONS:
        values = data.get(name)
        if not isinstance(values, dict):
            continue
        kind = str(values.get("type") or "in_memory")
        if kind not in _REDIS_TYPES[name]:
            out.write(f"{name}: skipped (type {kind} is not a Redis store)\n")
            continue
        checked += 1
        try:
            settings = RedisSettings.read(
                SettingsReader(values, section=name), default_db=default_db(name, kind)
            )
        except ConfigurationError as exc:
            failed += 1
            out.write(f"{name}: FAIL InvalidSettings: {exc}\n")
            continue
        # Turnstile's own stores are exercised (their scripts and keys); Rasa's are pinged.
        exercised = name if kind.startswith("turnstile.") else None
        report = await probe(
            settings, timeout=timeout, store=exercised, db_key=f"{name}.db"  # type: ignore[arg-type]
        )
        if report.ok:
            out.write(
                f"{name}: OK {report.mode} {settings.where} in {report.latency_ms:.1f} ms: "
                f"{report.message}\n"
            )
            if acl is not None and not await _check_acl(name, settings, report.master, acl, out):
                failed += 1
        else:
            failed += 1
            out.write(f"{name}: FAIL {report.reason}: {report.message}\n")
            if acl is not None and report.reason == "MissingPermission":  # name all of it
                await _check_acl(name, settings, report.master, acl, out)
    if not checked:
        raise _UsageError("the file declares no Redis lock_store or timer_store")
    return EXIT_FAILED if failed else EXIT_OK


def check_command(
    path: str, timeout: float, out: TextIO, acl: AclCheck | None = None
) -> int:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise _UsageError(f"{path}: {exc.strerror or exc}") from None
    return asyncio.run(_check_sections(read_endpoints(text), timeout, out, acl))


def _acl_check(args: argparse.Namespace) -> AclCheck | None:
    if not args.acl:
        return None
    if args.acl_admin_password_env is None:
        return AclCheck(args.acl_admin_user)
    password = os.environ.get(args.acl_admin_password_env)
    if password is None:
        raise _UsageError(f"--acl-admin-password-env: {args.acl_admin_password_env} is not set")
    return AclCheck(args.acl_admin_user, password)


# ---------------------------------------------------------------------------- operator


def operator_command(args: argparse.Namespace) -> int:
    from turnstile.operator.config import (  # noqa: PLC0415
        API_CONNECTIONS_ENV,
        METRICS_PORT_ENV,
        PROBE_TIMEOUT_ENV,
        RECHECK_INTERVAL_ENV,
    )

    # Handlers read these once, at import (a kopf timer's interval is fixed when registered).
    if args.recheck_interval is not None:
        os.environ[RECHECK_INTERVAL_ENV] = str(args.recheck_interval)
    if args.probe_timeout is not None:
        os.environ[PROBE_TIMEOUT_ENV] = str(args.probe_timeout)
    if args.metrics_port is not None:
        os.environ[METRICS_PORT_ENV] = str(args.metrics_port)
    if args.namespace and API_CONNECTIONS_ENV not in os.environ:
        # every watched namespace holds a watch stream per resource kind
        os.environ[API_CONNECTIONS_ENV] = str(max(64, 32 + 12 * len(args.namespace)))
    try:
        import kopf  # noqa: PLC0415

        import turnstile.operator.handlers.rollout  # noqa: PLC0415
        import turnstile.operator.handlers.stores  # noqa: F401, PLC0415
    except ImportError as exc:
        raise _UsageError(
            f"needs the [operator] extra: pip install '{DISTRIBUTION}[operator]' ({exc})"
        ) from None
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.PLAIN)
    liveness = (
        f"http://0.0.0.0:{args.liveness_port}/healthz" if args.liveness_port else None
    )
    standalone: bool | None = True if args.standalone else (False if args.peering else None)
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace or (),
        standalone=standalone,
        peering_name=args.peering,
        liveness_endpoint=liveness,
    )
    return EXIT_OK


# -------------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="turnstile", description="Redis lock and timer stores for replicated Rasa servers."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    render = sub.add_parser(
        "render",
        help="print the endpoints.yml (or integrations.yml) that store manifests produce",
    )
    render.add_argument("files", nargs="+", metavar="FILE", help="YAML manifests ('-': stdin)")
    render.add_argument(
        "--base", metavar="FILE",
        help="the bot's own endpoints.yml or integrations.yml: the sections are written into "
        "it as the operator writes them into a ConfigMap key holding it (every other byte kept)",
    )
    render.add_argument(
        "--namespace", default="default", help="namespace of stores that name none"
    )
    render.add_argument(
        "--transition-from", action="append", default=[], metavar="PREVIOUS",
        help="the stores (or the endpoints.yml) before the change: a lock-affecting change "
        "renders transition_from/transition_until as the operator does (repeatable)",
    )
    render.add_argument(
        "--transition-until", metavar="WHEN",
        help="end of the transition: RFC 3339 (2026-12-01T18:30:00Z), a Unix timestamp or "
        "+SECONDS (default: now + spec.transition.durationSeconds)",
    )

    check = sub.add_parser("check", help="probe the Redis stores an endpoints.yml declares")
    check.add_argument("endpoints", metavar="ENDPOINTS_YML")
    check.add_argument("--timeout", type=float, default=5.0, help="seconds per store")
    check.add_argument(
        "--acl", action="store_true",
        help="also verify the store's user has the documented ACL rule (ACL DRYRUN, Redis 7+)",
    )
    check.add_argument(
        "--acl-admin-user", help="user that may run ACL DRYRUN (default: the store's own)"
    )
    check.add_argument(
        "--acl-admin-password-env", metavar="VAR", help="environment variable with its password"
    )

    from turnstile.cli_inspect import add_parsers  # noqa: PLC0415

    add_parsers(sub)

    op = sub.add_parser("operator", help="run the Kubernetes operator")
    scope = op.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace", "-n", action="append", metavar="NS",
        help="watch this namespace (repeatable)",
    )
    scope.add_argument(
        "--all-namespaces", "-A", action="store_true", help="watch every namespace (default)"
    )
    op.add_argument("--metrics-port", type=int, help="Prometheus /metrics port (default 9090)")
    op.add_argument("--liveness-port", type=int, default=8080, help="/healthz port (0: off)")
    peering = op.add_mutually_exclusive_group()
    peering.add_argument("--peering", metavar="NAME", help="kopf peering object (HA replicas)")
    peering.add_argument("--standalone", action="store_true", help="no peering")
    op.add_argument(
        "--recheck-interval", type=float, help="seconds between re-checks (default 30)"
    )
    op.add_argument("--probe-timeout", type=float, help="seconds per Redis probe (default 5)")
    op.add_argument("--verbose", "-v", action="store_true", help="log more")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "render":
            return render_command(
                args.files, args.namespace, sys.stdout,
                transition_from=args.transition_from, transition_until=args.transition_until,
                base=args.base,
            )  # fmt: skip
        if args.command == "check":
            return check_command(args.endpoints, args.timeout, sys.stdout, _acl_check(args))
        if args.command == "locks":
            from turnstile.cli_inspect import locks_command  # noqa: PLC0415

            return locks_command(args, sys.stdout, sys.stderr)
        if args.command == "timers":
            from turnstile.cli_inspect import timers_command  # noqa: PLC0415

            return timers_command(args, sys.stdout, sys.stderr)
        return operator_command(args)
    except _UsageError as exc:
        verb = f" {args.verb}" if getattr(args, "verb", None) else ""
        print(f"turnstile {args.command}{verb}: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
