"""The operator against a real API server, controller-manager and real Redis in every mode.

One operator subprocess (``python -m turnstile.operator``, re-check every 2 s) watches the
test namespaces (``t-*``) for the whole module; tests that stop or restart the operator start
their own, on a namespace the shared one does not watch. Every wait is bounded.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from tests.k8s.test_crd_validation import install_crds
from tests.platform.control_plane import ControlPlane
from tests.platform.control_plane import wait_for as _wait_for
from tests.platform.operator_process import OperatorProcess
from tests.platform.redis_fixtures import REDIS_PASSWORD, SENTINEL_PASSWORD, require_redis
from tests.platform.redis_servers import RedisCluster, RedisServer, SentinelGroup
from turnstile.cli import check_command

pytestmark = pytest.mark.k8s

WAIT = 45.0
_T = TypeVar("_T")


def wait_for(what: str, probe: Callable[[], _T | None], timeout: float = WAIT) -> _T:
    return _wait_for(what, probe, timeout, 0.2)


@pytest.fixture(scope="module")
def crds(control_plane: ControlPlane) -> ControlPlane:
    install_crds(control_plane)
    return control_plane


@pytest.fixture(scope="module")
def operator(crds: ControlPlane) -> Iterator[OperatorProcess]:
    with OperatorProcess(crds.kubeconfig, namespaces=["t-*"], name="k8s-tests") as op:
        yield op


class Cluster:
    """kubectl helpers bound to one namespace."""

    def __init__(self, cp: ControlPlane, namespace: str) -> None:
        self.cp = cp
        self.ns = namespace

    def apply(self, *docs: dict[str, Any]) -> None:
        for doc in docs:
            doc.setdefault("metadata", {}).setdefault("namespace", self.ns)
        self.cp.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        proc = self.cp.kubectl("-n", self.ns, "get", kind, name, "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr:
                return None
            raise AssertionError(proc.stderr)
        return json.loads(proc.stdout)  # type: ignore[no-any-return]

    def delete(self, kind: str, name: str, *, wait: bool = True) -> None:
        self.cp.kubectl(
            "-n", self.ns, "delete", kind, name, f"--wait={str(wait).lower()}", "--timeout=60s"
        )

    def condition(self, kind: str, name: str, type_: str = "Ready") -> dict[str, Any]:
        body = self.get(kind, name) or {}
        for c in (body.get("status") or {}).get("conditions") or []:
            if c["type"] == type_:
                return c  # type: ignore[no-any-return]
        return {}

    def wait_condition(
        self, kind: str, name: str, status: str, reason: str | None = None, *,
        type_: str = "Ready", timeout: float = WAIT,
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            c = self.condition(kind, name, type_)
            ok = c.get("status") == status and (reason is None or c.get("reason") == reason)
            return c if ok else None

        return wait_for(f"{kind}/{name} {type_}={status} {reason or ''}", check, timeout)

    def endpoints(self, configmap: str, key: str = "endpoints.yml") -> dict[str, Any] | None:
        cm = self.get("configmap", configmap)
        if cm is None:
            return None
        return yaml.safe_load((cm.get("data") or {}).get(key) or "") or {}

    def events(self, name: str) -> list[dict[str, Any]]:
        out = self.cp.kubectl(
            "-n", self.ns, "get", "events", "--field-selector", f"involvedObject.name={name}",
            "-o", "json",
        ).stdout
        return json.loads(out)["items"]  # type: ignore[no-any-return]

    def secret(self, name: str, data: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "labels": {"turnstile.dev/store-secret": "true"}},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        }


def store(kind: str, name: str, redis: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "turnstile.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": {"redis": redis, **spec},
    }


@pytest.fixture
def k(crds: ControlPlane, kube_namespace: str) -> Cluster:
    return Cluster(crds, kube_namespace)


# ----------------------------------------------------------------------------- modes


def test_standard_store_with_a_password_becomes_ready_and_renders(
    operator: OperatorProcess, k: Cluster, redis_password_server: RedisServer
) -> None:
    server = redis_password_server
    k.apply(
        k.secret("redis-auth", {"password": REDIS_PASSWORD}),
        store("LockStore", "locks", {"host": server.host, "port": server.port,
                                     "passwordSecretRef": {"name": "redis-auth"}, "db": 2,
                                     "keyPrefix": "bot"},
              configMap={"name": "bot-endpoints"}, lockLifetime=30),
    )
    k.wait_condition("lks", "locks", "True", "Ready")
    section = k.endpoints("bot-endpoints")["lock_store"]  # type: ignore[index]
    assert section == {
        "type": "turnstile.rasa.TicketLockStore", "deployment_mode": "standard",
        "host": server.host, "port": server.port, "db": 2, "key_prefix": "bot",
        "password": "${TURNSTILE_LOCK_STORE_PASSWORD}", "lock_lifetime": 30,
    }
    status = k.get("lks", "locks")["status"]  # type: ignore[index]
    assert status["secretEnv"] == [
        {"name": "TURNSTILE_LOCK_STORE_PASSWORD", "secretName": "redis-auth",
         "secretKey": "password"}
    ]
    assert status["configMap"] == {"name": "bot-endpoints", "key": "endpoints.yml",
                                   "format": "endpoints", "section": "lock_store", "owned": True}
    assert status["master"] == f"{server.host}:{server.port}"
    cm = k.get("configmap", "bot-endpoints")
    assert cm["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "turnstile"  # type: ignore[index]
    # the password is nowhere a user or a log reader could see it
    seen = json.dumps([cm, k.get("lks", "locks"), k.events("locks")]) + operator.logs()
    assert REDIS_PASSWORD not in seen


def test_cluster_store_becomes_ready(
    operator: OperatorProcess, k: Cluster, redis_cluster: RedisCluster
) -> None:
    k.apply(store("TimerStore", "timers", {"deploymentMode": "cluster",
                                           "endpoints": redis_cluster.endpoints},
                  configMap={"name": "bot-endpoints"}, pollInterval=0.5))
    k.wait_condition("tms", "timers", "True", "Ready")
    section = k.endpoints("bot-endpoints")["timer_store"]  # type: ignore[index]
    assert section["deployment_mode"] == "cluster"
    assert section["endpoints"] == redis_cluster.endpoints
    assert "db" not in section
    assert section["poll_interval"] == 0.5
    status = k.get("tms", "timers")["status"]  # type: ignore[index]
    assert status["nodes"] == 6
    assert "16384/16384 slots" in k.condition("tms", "timers", "Connected")["message"]


def test_sentinel_store_becomes_ready_with_the_master_in_status(
    operator: OperatorProcess, k: Cluster, redis_sentinel: SentinelGroup
) -> None:
    k.apply(store("LockStore", "locks", {"deploymentMode": "sentinel",
                                         "endpoints": redis_sentinel.endpoints,
                                         "sentinelService": redis_sentinel.service_name},
                  configMap={"name": "bot-endpoints"}, implementation="rasa"))
    k.wait_condition("lks", "locks", "True", "Ready")
    host, port = redis_sentinel.current_master()
    status = k.get("lks", "locks")["status"]  # type: ignore[index]
    assert status["master"] == f"{host}:{port}"
    assert status["sentinels"] == 3
    section = k.endpoints("bot-endpoints")["lock_store"]  # type: ignore[index]
    assert section["type"] == "concurrent_redis"
    assert section["endpoints"] == redis_sentinel.endpoints
    assert section["sentinel_service"] == redis_sentinel.service_name


def test_sentinels_with_a_password_make_a_ready_store_with_the_password_as_a_var(
    operator: OperatorProcess, k: Cluster, redis_sentinel_auth: SentinelGroup
) -> None:
    group = redis_sentinel_auth
    k.apply(
        k.secret("redis-auth", {"password": REDIS_PASSWORD}),
        k.secret("sentinel-auth", {"pw": SENTINEL_PASSWORD}),
        store("LockStore", "locks", {"deploymentMode": "sentinel", "endpoints": group.endpoints,
                                     "sentinelService": group.service_name,
                                     "passwordSecretRef": {"name": "redis-auth"},
                                     "sentinel": {"passwordSecretRef": {"name": "sentinel-auth",
                                                                        "key": "pw"}}},
              configMap={"name": "bot-endpoints"}),
    )
    k.wait_condition("lks", "locks", "True", "Ready")
    status = k.get("lks", "locks")["status"]  # type: ignore[index]
    assert status["sentinels"] == 3
    assert {"name": "TURNSTILE_LOCK_STORE_SENTINEL_PASSWORD", "secretName": "sentinel-auth",
            "secretKey": "pw"} in status["secretEnv"]
    section = k.endpoints("bot-endpoints")["lock_store"]  # type: ignore[index]
    assert section["sentinel_password"] == "${TURNSTILE_LOCK_STORE_SENTINEL_PASSWORD}"
    seen = json.dumps([k.get("configmap", "bot-endpoints"), k.get("lks", "locks"),
                       k.events("locks")]) + operator.logs()
    assert SENTINEL_PASSWORD not in seen and REDIS_PASSWORD not in seen


def test_tls_verifies_by_default_and_verification_off_is_one_warning_event(
    operator: OperatorProcess, k: Cluster, redis_tls_server: RedisServer
) -> None:
    server = redis_tls_server
    redis = {"host": server.host, "port": server.port, "tls": {"enabled": True}}
    k.apply(store("LockStore", "locks", redis))  # no CA: the system trust store refuses it
    k.wait_condition("lks", "locks", "False", "TLSVerificationFailed", type_="Connected")
    k.apply(store("LockStore", "locks", {**redis, "tls": {"enabled": True, "verify": False}},
                  configMap={"name": "bot-endpoints"}))
    k.wait_condition("lks", "locks", "True", "Ready")
    assert k.endpoints("bot-endpoints")["lock_store"]["ssl_cert_reqs"] == "none"  # type: ignore[index]
    assert "tls.verify is false" in k.get("lks", "locks")["status"]["tlsWarning"]  # type: ignore[index]
    time.sleep(5)  # two re-checks (every 2 s) say nothing new
    warned = [e for e in k.events("locks") if e["reason"] == "TLSVerificationOff"]
    assert len(warned) == 1 and warned[0]["type"] == "Warning"
    assert warned[0].get("count", 1) == 1


def test_a_killed_sentinel_master_shows_up_as_an_event_and_a_new_master(
    operator: OperatorProcess, k: Cluster, fresh_redis_sentinel: SentinelGroup
) -> None:
    group = fresh_redis_sentinel
    k.apply(store("TimerStore", "timers", {"deploymentMode": "sentinel",
                                           "endpoints": group.endpoints}))
    k.wait_condition("tms", "timers", "True", "Ready")
    old = group.kill_master()
    new = group.wait_for_failover(old, timeout=40)
    wait_for("the new master in status",
             lambda: (k.get("tms", "timers") or {}).get("status", {}).get("master")
             == f"{new[0]}:{new[1]}", timeout=60)
    event = wait_for(
        "a MasterChanged event",
        lambda: [e for e in k.events("timers") if e["reason"] == "MasterChanged"],
    )[0]
    assert event["type"] == "Warning"
    assert f"{new[0]}:{new[1]}" in event["message"]
    k.wait_condition("tms", "timers", "True", "Ready")


def test_unreachable_redis_is_a_condition_not_a_hot_loop(
    operator: OperatorProcess, k: Cluster
) -> None:
    k.apply(store("LockStore", "nowhere", {"host": "127.0.0.1", "port": 1},
                  configMap={"name": "bot-endpoints"}))
    ready = k.wait_condition("lks", "nowhere", "False", "Unreachable")
    assert "127.0.0.1:1" in ready["message"]
    # the section is rendered anyway: bots can start and retry on their own
    assert k.endpoints("bot-endpoints")["lock_store"]["port"] == 1  # type: ignore[index]
    assert k.condition("lks", "nowhere", "ConfigRendered")["status"] == "True"
    transition = ready["lastTransitionTime"]
    time.sleep(5)  # ~2 re-checks
    again = k.condition("lks", "nowhere")
    assert again["lastTransitionTime"] == transition
    warnings = [e for e in k.events("nowhere") if e["reason"] == "Unreachable"]
    assert len(warnings) == 1, warnings  # not one per re-check
    assert warnings[0].get("count", 1) == 1


#: ``kubectl delete`` of a store returns within this, whatever its Redis is doing
#: (docs/operator.md, "Deleting a store").
DELETE_BOUND = 10.0


def test_a_store_whose_redis_never_answers_is_deleted_quickly(
    operator: OperatorProcess, k: Cluster
) -> None:
    # A loopback "Redis" that accepts every connection (the kernel completes the handshake
    # from the backlog) and never answers a byte: each probe waits for its whole timeout.
    silent = socket.create_server(("127.0.0.1", 0), backlog=64)
    try:
        port = silent.getsockname()[1]
        k.apply(store("LockStore", "silent", {"host": "127.0.0.1", "port": port},
                      configMap={"name": "bot-endpoints"}))
        k.wait_condition("lks", "silent", "False", "Unreachable", type_="Connected")
        time.sleep(2.5)  # a re-check (every 2 s) is now dialling the silent host
        started = time.monotonic()
        proc = k.cp.kubectl("-n", k.ns, "delete", "lks", "silent",
                            f"--timeout={DELETE_BOUND:g}s", check=False)  # fmt: skip
        took = time.monotonic() - started
        assert proc.returncode == 0, proc.stderr
        print(f"deleting a store whose Redis never answers took {took:.2f} s")
        assert took < DELETE_BOUND
        assert k.get("lks", "silent") is None
        assert "lock_store" not in (k.endpoints("bot-endpoints") or {})
    finally:
        silent.close()


# -------------------------------------------------------------------- ConfigMap sharing


USERS_ENDPOINTS = """\
# Bot endpoints: edited by hand
action_endpoint:
  url: "http://actions:5055/webhook"   # the action server

tracker_store:
  type: sql
  port: 05432
  dialect: off
  timeout: 1:30
  host: "${DB_HOST}"
  password: ${DB_PASSWORD}
# models come last
models: {url: 'http://models', wait_time_between_pulls: 10}
"""


def test_a_users_endpoints_file_is_kept_byte_for_byte(
    operator: OperatorProcess, k: Cluster, redis_server: RedisServer
) -> None:
    k.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bot"},
             "data": {"endpoints.yml": USERS_ENDPOINTS}})  # fmt: skip
    redis = {"host": redis_server.host, "port": redis_server.port}
    k.apply(store("LockStore", "locks", redis, configMap={"name": "bot"}))
    k.wait_condition("lks", "locks", "True", "Ready")
    text = k.get("configmap", "bot")["data"]["endpoints.yml"]  # type: ignore[index]
    # The user's file, untouched, and the store's section appended after it.
    assert text.startswith(USERS_ENDPOINTS)
    assert yaml.safe_load(text[len(USERS_ENDPOINTS):])["lock_store"]["port"] == redis_server.port
    k.delete("lks", "locks")
    wait_for("the section removed, the file as the user wrote it", lambda: (
        (k.get("configmap", "bot") or {}).get("data", {}).get("endpoints.yml") == USERS_ENDPOINTS
    ))  # fmt: skip




def test_two_kinds_share_a_configmap_and_keep_a_users_sections(
    operator: OperatorProcess, k: Cluster, redis_server: RedisServer
) -> None:
    k.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bot"},
             "data": {"endpoints.yml": "action_endpoint:\n  url: http://actions:5055/webhook\n",
                      "other": "kept"}})
    redis = {"host": redis_server.host, "port": redis_server.port}
    k.apply(store("LockStore", "locks", redis, configMap={"name": "bot"}),
            store("TimerStore", "timers", redis, configMap={"name": "bot"}))
    k.wait_condition("lks", "locks", "True", "Ready")
    k.wait_condition("tms", "timers", "True", "Ready")
    data = wait_for("both sections", lambda: (d := k.endpoints("bot")) and
                    {"lock_store", "timer_store"} <= set(d) and d)
    assert list(data) == ["action_endpoint", "lock_store", "timer_store"]
    cm = k.get("configmap", "bot")
    assert cm["data"]["other"] == "kept"  # type: ignore[index]
    # it existed before: not owned, so deleting the stores never deletes the user's file
    assert cm["metadata"]["annotations"]["turnstile.dev/pre-existing"] == "true"  # type: ignore[index]
    assert not cm["metadata"].get("ownerReferences")  # type: ignore[index]
    assert k.get("lks", "locks")["status"]["configMap"]["owned"] is False  # type: ignore[index]
    k.delete("lks", "locks")
    k.delete("tms", "timers")
    data = wait_for("sections removed",
                    lambda: (d := k.endpoints("bot")) is not None and "lock_store" not in d
                    and "timer_store" not in d and d)
    assert data == {"action_endpoint": {"url": "http://actions:5055/webhook"}}
    assert k.get("configmap", "bot")["data"]["other"] == "kept"  # type: ignore[index]


def test_two_stores_of_one_kind_conflict_on_both_until_one_goes(
    operator: OperatorProcess, k: Cluster, redis_server: RedisServer
) -> None:
    redis = {"host": redis_server.host, "port": redis_server.port}
    k.apply(store("LockStore", "first", redis, configMap={"name": "bot"}))
    k.wait_condition("lks", "first", "True", "Ready")
    k.apply(store("LockStore", "second", {**redis, "keyPrefix": "other"},
                  configMap={"name": "bot"}))
    for name in ("first", "second"):
        c = k.wait_condition("lks", name, "False", "ConfigMapConflict")
        assert "first, second" in c["message"]
    # neither overwrote the other: the section is still the first store's
    assert "key_prefix" not in k.endpoints("bot")["lock_store"]  # type: ignore[index]
    k.delete("lks", "first")
    k.wait_condition("lks", "second", "True", "Ready")
    wait_for("the second store's section",
             lambda: (k.endpoints("bot") or {}).get("lock_store", {}).get("key_prefix") == "other")


def test_deleting_the_last_store_garbage_collects_its_configmap(
    operator: OperatorProcess, k: Cluster, redis_server: RedisServer
) -> None:
    redis = {"host": redis_server.host, "port": redis_server.port}
    k.apply(store("LockStore", "locks", redis, configMap={"name": "owned"}),
            store("TimerStore", "timers", redis, configMap={"name": "owned"}))
    wait_for("both sections", lambda: set(k.endpoints("owned") or {}) ==
             {"lock_store", "timer_store"})
    refs = k.get("configmap", "owned")["metadata"]["ownerReferences"]  # type: ignore[index]
    assert sorted(r["kind"] for r in refs) == ["LockStore", "TimerStore"]
    k.delete("lks", "locks")
    wait_for("lock_store section removed", lambda: set(k.endpoints("owned") or {"x"}) ==
             {"timer_store"})
    k.delete("tms", "timers")
    wait_for("the ConfigMap garbage-collected", lambda: k.get("configmap", "owned") is None,
             timeout=90)


# ---------------------------------------------------------------------------- Secrets


def test_a_missing_secret_is_a_clear_condition_and_recovers(
    operator: OperatorProcess, k: Cluster, redis_password_server: RedisServer
) -> None:
    server = redis_password_server
    k.apply(store("TimerStore", "timers", {"host": server.host, "port": server.port,
                                           "passwordSecretRef": {"name": "late", "key": "pw"}},
                  configMap={"name": "bot"}))
    c = k.wait_condition("tms", "timers", "False", "SecretNotFound")
    assert "'late'" in c["message"]
    # the section does not wait for the Secret: bots get the ${VAR} reference already
    assert k.endpoints("bot")["timer_store"]["password"] == "${TURNSTILE_TIMER_STORE_PASSWORD}"  # type: ignore[index]
    k.apply(k.secret("late", {"other": "x"}))
    c = k.wait_condition("tms", "timers", "False", "SecretKeyNotFound")
    assert "'pw'" in c["message"] and "other" in c["message"]
    k.apply(k.secret("late", {"pw": REDIS_PASSWORD}))
    k.wait_condition("tms", "timers", "True", "Ready")
    k.apply(k.secret("late", {"pw": "wrong-password-value"}))
    c = k.wait_condition("tms", "timers", "False", "AuthenticationFailed")
    assert "wrong-password-value" not in json.dumps(k.get("tms", "timers"))
    assert REDIS_PASSWORD not in operator.logs() and "wrong-password-value" not in operator.logs()


def test_ready_means_a_bot_can_use_it_acl_and_secret_bytes(
    operator: OperatorProcess, k: Cluster, redis_server: RedisServer
) -> None:
    """Ready only when the store's own operations run as the bots' ACL user, with the Secret's
    bytes exactly as pods get them; a password Rasa cannot load is refused up front."""
    from turnstile.stores.acl import acl_rule  # noqa: PLC0415

    user, password = f"k8s{uuid.uuid4().hex[:8]}", "acl-k8s-pw"
    # May PING (and name its connection) but not run the store's scripts: Ready before.
    redis_server.execute("ACL", "SETUSER", user, "reset", "on", f">{password}", "resetkeys",
                         "~*", "-@all", "+ping", "+client|setname")
    k.apply(
        k.secret("acl-auth", {"password": password}),
        store("LockStore", "acl-locks", {"host": redis_server.host, "port": redis_server.port,
                                         "db": 0, "keyPrefix": "bot", "username": user,
                                         "passwordSecretRef": {"name": "acl-auth"}},
              configMap={"name": "acl-bot"}),
    )
    c = k.wait_condition("lks", "acl-locks", "False", "MissingPermission", type_="Connected")
    assert f"ACL user '{user}'" in c["message"] and "NOPERM" in c["message"], c["message"]
    assert "'eval" in c["message"], c["message"]
    assert k.condition("lks", "acl-locks")["status"] == "False"
    # The documented rule makes it Ready on the next re-check.
    redis_server.execute("ACL", "SETUSER", user, "reset", "on", f">{password}",
                         *acl_rule("lock_store", "bot"))
    c = k.wait_condition("lks", "acl-locks", "True", "Connected", type_="Connected")
    assert "lock cycle with a waiter ran" in c["message"], c["message"]
    k.wait_condition("lks", "acl-locks", "True")
    # `echo pw | kubectl create secret ...`: pods get the newline, so the operator does too.
    k.apply(k.secret("acl-auth", {"password": password + "\n"}))
    c = k.wait_condition("lks", "acl-locks", "False", "AuthenticationFailed", type_="Connected")
    assert "was it made with `echo` without -n?" in c["message"], c["message"]
    # A password Rasa's ${VAR} expansion refuses would stop every bot at start.
    k.apply(k.secret("acl-auth", {"password": "a $ b"}))
    c = k.wait_condition("lks", "acl-locks", "False", "SecretValueUnusable", type_="Connected")
    assert "${TURNSTILE_LOCK_STORE_PASSWORD}" in c["message"]
    seen = json.dumps([k.get("lks", "acl-locks"), k.events("acl-locks")]) + operator.logs()
    assert password not in seen and "a $ b" not in seen


def test_ready_means_the_bots_database_a_one_database_redis(
    operator: OperatorProcess, k: Cluster, tmp_path: Path
) -> None:
    """A Redis with ``databases 1`` and no ``spec.redis.db``: the bots would use db 1 (the
    lock store's default) and fail, so the store is not Ready and says what to set; the
    status and ``turnstile check`` name the same address; ``db: 0`` makes it Ready."""
    require_redis("redis-server", "redis-cli")
    with RedisServer(name="redis-one-db", extra_config=["databases 1"]) as server:
        redis = {"host": server.host, "port": server.port}
        k.apply(store("LockStore", "one-db", redis, configMap={"name": "one-db-bot"}))
        c = k.wait_condition("lks", "one-db", "False", "DatabaseOutOfRange")
        where = f"{server.host}:{server.port}/1"
        assert f"Redis ({where}) has no database 1" in c["message"], c["message"]
        assert "set spec.redis.db" in c["message"], c["message"]
        # A bot's own check of the rendered file fails on the same address.
        rendered = wait_for("the section rendered", lambda: k.endpoints("one-db-bot"))
        path = tmp_path / "endpoints.yml"
        path.write_text(yaml.safe_dump(rendered))
        out = io.StringIO()
        assert check_command(str(path), 5.0, out) != 0
        assert f"lock_store: FAIL DatabaseOutOfRange: Redis ({where}) has no database 1" in (
            out.getvalue()
        ), out.getvalue()
        warnings = [e for e in k.events("one-db") if e["reason"] == "DatabaseOutOfRange"]
        assert len(warnings) == 1, warnings

        k.apply(store("LockStore", "one-db", {**redis, "db": 0},
                      configMap={"name": "one-db-bot"}))
        c = k.wait_condition("lks", "one-db", "True", "Connected", type_="Connected")
        assert f"{server.host}:{server.port}/0" in c["message"], c["message"]
        k.wait_condition("lks", "one-db", "True")
        path.write_text(yaml.safe_dump(k.endpoints("one-db-bot")))
        out = io.StringIO()
        assert check_command(str(path), 5.0, out) == 0, out.getvalue()
        assert f"lock_store: OK standard {server.host}:{server.port}/0 " in out.getvalue()
        k.delete("lks", "one-db")


# -------------------------------------------------------------------------- lifecycle


def test_operator_restart_reconciles_what_changed_while_it_was_down(
    crds: ControlPlane, redis_server: RedisServer
) -> None:
    namespace = f"solo-{uuid.uuid4().hex[:8]}"  # not t-*: only this test's operator sees it
    crds.kubectl("create", "namespace", namespace)
    k = Cluster(crds, namespace)
    redis = {"host": redis_server.host, "port": redis_server.port}
    op = OperatorProcess(crds.kubeconfig, namespaces=[namespace], name="restart")
    try:
        op.start()
        k.apply(store("LockStore", "locks", redis, configMap={"name": "bot"}))
        k.wait_condition("lks", "locks", "True", "Ready")
        op.kill()  # a crash, mid-life
        k.apply(store("LockStore", "locks", {**redis, "keyPrefix": "changed"},
                      configMap={"name": "bot"}))
        k.apply(store("TimerStore", "timers", redis, configMap={"name": "bot"}))
        time.sleep(1)
        assert "key_prefix" not in k.endpoints("bot")["lock_store"]  # type: ignore[index]
        op.start()
        wait_for("the change made while down",
                 lambda: (k.endpoints("bot") or {}).get("lock_store", {}).get("key_prefix")
                 == "changed")
        k.wait_condition("tms", "timers", "True", "Ready")
        k.wait_condition("lks", "locks", "True", "Ready")
        gen = k.get("lks", "locks")["metadata"]["generation"]  # type: ignore[index]
        assert k.condition("lks", "locks")["observedGeneration"] == gen
        assert op.running
    finally:
        op.stop()
        crds.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_metrics_and_liveness_are_served(operator: OperatorProcess, k: Cluster,
                                         redis_server: RedisServer) -> None:
    k.apply(store("LockStore", "locks", {"host": redis_server.host, "port": redis_server.port}))
    k.wait_condition("lks", "locks", "True", "Ready")
    text = operator.metrics()
    for series in ("turnstile_reconciles_total", "turnstile_probe_latency_seconds_bucket",
                   "turnstile_stores_ready", "turnstile_reconcile_failures_total"):
        assert series in text
    c = k.condition("lks", "locks", "ConfigRendered")
    assert c["reason"] == "NoConfigMap"


def test_a_spec_that_slipped_past_an_older_schema_is_invalid_spec_not_a_crash(
    operator: OperatorProcess, k: Cluster
) -> None:
    """An object stored under a laxer CRD (an older release) reaches the operator as is."""
    lax = json.loads(k.cp.kubectl("get", "crd", "lockstores.turnstile.dev", "-o", "json").stdout)
    version = lax["spec"]["versions"][0]
    version["schema"]["openAPIV3Schema"]["properties"]["spec"] = {
        "type": "object", "x-kubernetes-preserve-unknown-fields": True,
    }
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        lax["metadata"].pop(key, None)
    lax.pop("status", None)
    try:
        k.cp.kubectl("replace", "-f", "-", stdin=json.dumps(lax))
        wait_for("the lax schema to be served", lambda: k.cp.kubectl(
            "apply", "--dry-run=server", "-f", "-", check=False,
            stdin=yaml.safe_dump(store("LockStore", "probe-lax", {"deploymentMode": "sentinel"})
                                 | {"metadata": {"name": "probe-lax", "namespace": k.ns}}),
        ).returncode == 0, timeout=30)
        k.apply(store("LockStore", "slipped", {"deploymentMode": "sentinel"},
                      configMap={"name": "bot"}))
    finally:
        install_crds(k.cp)  # the real schema again, for everything after this test
    c = k.wait_condition("lks", "slipped", "False", "InvalidSpec")
    assert c["message"].startswith("Connected: spec.redis.endpoints: sentinel mode needs")
    assert k.get("configmap", "bot") is None  # nothing rendered from an invalid spec
    assert operator.running
    k.delete("lks", "slipped")  # and the finalizer lets it go
    wait_for("the real schema to refuse it again", lambda: k.cp.kubectl(
        "apply", "--dry-run=server", "-f", "-", check=False,
        stdin=yaml.safe_dump(store("LockStore", "probe-strict", {"deploymentMode": "sentinel"})
                             | {"metadata": {"name": "probe-strict", "namespace": k.ns}}),
    ).returncode != 0, timeout=30)
