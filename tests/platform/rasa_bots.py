"""Rasa bot pods on the node tier: their manifests, and a client that talks to them as a channel
does (the REST channel through the bot's Service) and audits the trackers afterwards.

The bot is ``tests/rasa_server/bot`` (keyword and regex: "note m17" is answered "echo m17"),
trained once per session with real ``rasa train`` and mounted from a ConfigMap. Every pod runs
``turnstile-rasa run`` from the image of :mod:`tests.platform.rasa_image`, reads the
``endpoints.yml`` the operator renders (mounted as a directory, not ``subPath``, so the kubelet
updates it in place) and its Redis password from the env the operator injects. Rasa's ``redis``
tracker store is shared by the pods: without it a lock has nothing to protect.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.platform.cluster import Cluster
from tests.platform.control_plane import wait_for
from tests.platform.images import Image
from tests.platform.workloads import is_ready, pods
from tests.rasa_server.servers import Audit, audit, expected_reply, message

PORT = 5005
CONFIG_DIR = "/app/config"
CREDENTIALS = "rest:\n"


SLOW_ACTION = Path(__file__).with_name("slow_action.py")
SLOW_PORT = 5055


def tracker_store(redis_ip: str, action_url: str, password_env: str | None = None) -> str:
    """The user's own sections of the bot's file: Rasa's Redis tracker store (db 0; its
    password, if any, from ``${password_env}``), and the action server (:func:`action_server`)."""
    password = f"  password: ${{{password_env}}}\n" if password_env else ""
    return (
        "tracker_store:\n  type: redis\n"
        f"  url: {redis_ip}\n  port: 6379\n  db: 0\n  key_prefix: tracker\n  record_exp: 3600\n"
        f"{password}action_endpoint:\n  url: {action_url}\n"
    )


def endpoints_configmap(
    name: str, redis_ip: str, action_url: str, *, password_env: str | None = None
) -> dict[str, Any]:
    """The bot's ConfigMap as the user (or the bot's chart) writes it: their sections, none of
    Turnstile's; the LockStore adds ``lock_store`` to it."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {
            "endpoints.yml": tracker_store(redis_ip, action_url, password_env),
            "credentials.yml": CREDENTIALS,
        },
    }


def model_configmap(model: Path) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "bot-model"},
        "binaryData": {"bot.tar.gz": base64.b64encode(model.read_bytes()).decode()},
        "data": {"slow_action.py": SLOW_ACTION.read_text()},
    }


def bot_deployment(
    image: Image, configmap: str, *, replicas: int = 2, require: bool = True,
    name: str = "bot", grace: int = 15, env: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Two Rasa pods behind ``Service`` :func:`bot_service`; Ready once ``/status`` answers
    with the model loaded. ``require``: the manifest says the pods must load ``lock_store``
    (``TURNSTILE_REQUIRE_SECTIONS``), so they fail closed also before the first render.
    ``env``: the user's own variables (for example a password from a Secret)."""
    required = [{"name": "TURNSTILE_REQUIRE_SECTIONS", "value": "lock_store"}] if require else []
    env = [*required, *(env or [])]
    container = {
        "name": "rasa",
        "image": image.name,
        "imagePullPolicy": "Never",
        "args": [
            "run", "--enable-api", "--port", str(PORT),
            "--endpoints", f"{CONFIG_DIR}/endpoints.yml",
            "--credentials", f"{CONFIG_DIR}/credentials.yml",
            "--model", "/app/models/bot.tar.gz",
        ],
        "env": env,
        "ports": [{"containerPort": PORT, "name": "http"}],
        # Tolerant of a busy node (a 1 s timeout on 2 loaded cores took both pods out of the
        # Service at once), quick to turn Ready.
        "readinessProbe": {
            "httpGet": {"path": "/status", "port": PORT},
            "periodSeconds": 1,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        # The Service stops sending here before Sanic stops accepting (kube-proxy needs a
        # moment to drop a terminating pod): a rollout refuses no message.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "3"]}}},
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR},
            {"name": "model", "mountPath": "/app/models"},
        ],
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False},
    }  # fmt: skip
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": grace,
                    "containers": [container],
                    "volumes": [
                        # Not optional: a pod whose ConfigMap does not exist yet waits for it.
                        {"name": "config", "configMap": {"name": configmap}},
                        {"name": "model", "configMap": {"name": "bot-model"}},
                    ],
                },
            },
        },
    }


def action_server(image: Image) -> list[dict[str, Any]]:
    """The bots' action server, a pod of its own behind Service ``actions``: ``action_slow``
    answers after 30 s (``tests/platform/slow_action.py``), so a "slow m7" message holds its
    conversation that long; a bot pod killed meanwhile dies holding it."""
    container = {
        "name": "actions",
        "image": image.name,
        "imagePullPolicy": "Never",
        "command": ["/opt/rasa/bin/python", "/app/models/slow_action.py"],
        "ports": [{"containerPort": SLOW_PORT}],
        "readinessProbe": {"tcpSocket": {"port": SLOW_PORT}, "periodSeconds": 1},
        "volumeMounts": [{"name": "model", "mountPath": "/app/models"}],
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False},
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "actions", "labels": {"app": "actions"}},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [container],
                "volumes": [{"name": "model", "configMap": {"name": "bot-model"}}],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "actions"},
            "spec": {
                "selector": {"app": "actions"},
                "ports": [{"port": SLOW_PORT, "targetPort": SLOW_PORT}],
            },
        },
    ]


def action_url(cluster: Cluster, namespace: str) -> str:
    service = cluster.control_plane.get_json("service", "actions", "-n", namespace)
    assert service is not None
    return f"http://{service['spec']['clusterIP']}:{SLOW_PORT}/webhook"


def bot_service(name: str = "bot") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": PORT, "targetPort": PORT}]},
    }


def service_url(cluster: Cluster, namespace: str, name: str = "bot") -> str:
    service = cluster.control_plane.get_json("service", name, "-n", namespace)
    assert service is not None
    return f"http://{service['spec']['clusterIP']}:{PORT}"


# ---------------------------------------------------------------------------- the channel


@dataclass
class Message:
    sender: str
    tag: str
    sent_at: float
    seconds: float = 0.0
    replies: list[str] = field(default_factory=list)
    error: str | None = None
    retries: int = 0  # connections refused before one was accepted

    @property
    def answered(self) -> bool:
        return self.error is None and self.replies == [expected_reply(self.tag)]


#: A connection refused never reached Rasa (no Ready pod behind the Service at that moment):
#: the client sends again, as a channel's webhook sender does, at most this often.
CONNECT_RETRIES = 20
CONNECT_BACKOFF = 0.25


async def post(session: aiohttp.ClientSession, url: str, sender: str, tag: str,
               timeout: float = 60.0, *, text: str | None = None) -> Message:  # fmt: skip
    """One message to the REST channel, as a channel sends it; bounded. ``text``: another
    message than "note <tag>" (whose reply is "echo <tag>").

    Only a refused connection is sent again (the request never reached a pod, so it cannot be
    doubled); ``Message.retries`` counts them. Any other failure is the message's ``error``.
    """
    sent = Message(sender, tag, time.monotonic())
    for attempt in range(CONNECT_RETRIES + 1):
        try:
            async with session.post(
                f"{url}/webhooks/rest/webhook",
                json={"sender": sender, "message": text or message(tag)},
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as reply:
                body = await reply.json(content_type=None)
                if reply.status != 200 or not isinstance(body, list):
                    sent.error = f"HTTP {reply.status}"
                else:
                    sent.replies = [str(m.get("text")) for m in body]
        except aiohttp.ClientConnectorError as exc:
            if attempt < CONNECT_RETRIES and isinstance(exc.os_error, ConnectionRefusedError):
                sent.retries += 1
                await asyncio.sleep(CONNECT_BACKOFF)
                continue
            sent.error = f"{type(exc).__name__}: {exc}"
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            sent.error = f"{type(exc).__name__}: {exc}"
        break
    sent.seconds = time.monotonic() - sent.sent_at
    return sent


def new_session() -> aiohttp.ClientSession:
    """A connection per request (``force_close``): a kept-alive connection would stay pinned to
    one pod through the Service's NAT, so the Service would balance nothing."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=64))


class Stream:
    """Messages on ``conversations``, two in flight per conversation (so the pods' lock stores
    have something to order), until stopped; every message kept for the audit."""

    def __init__(self, url: str, conversations: Iterable[str], *, pause: float = 0.05) -> None:
        self.url = url
        self.conversations = list(conversations)
        self.pause = pause
        self.sent: list[Message] = []
        self._stop = asyncio.Event()
        self._tags = itertools.count(1)
        self._task: asyncio.Future[Any] | None = None

    async def _conversation(self, session: aiohttp.ClientSession, sender: str) -> None:
        for _ in range(100_000):  # bounded; stopped long before
            if self._stop.is_set():
                return
            pair = [f"m{next(self._tags)}", f"m{next(self._tags)}"]
            done = await asyncio.gather(*(post(session, self.url, sender, t) for t in pair))
            self.sent.extend(done)
            await asyncio.sleep(self.pause)

    async def __aenter__(self) -> Stream:
        self._session = new_session()
        self._task = asyncio.gather(*(self._conversation(self._session, c)
                                      for c in self.conversations))  # fmt: skip
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        try:
            await asyncio.wait_for(self._task, 120)
        finally:
            await self._session.close()

    def answered_since(self, moment: float) -> int:
        return sum(1 for m in self.sent if m.answered and m.sent_at >= moment)


async def tracker_events(url: str, sender: str) -> list[dict[str, Any]]:
    async with (
        new_session() as session,
        session.get(
            f"{url}/conversations/{sender}/tracker", timeout=aiohttp.ClientTimeout(total=60)
        ) as reply,
    ):
        reply.raise_for_status()
        tracker = await reply.json(content_type=None)
    return list(tracker.get("events") or [])


@dataclass
class Accounting:
    """A table row of the issue: what happened to the messages of one case."""

    sent: int
    answered: int
    refused: list[str]  # no answer at the channel (connection refused, reset, 5xx)
    lost: list[str]  # answered, yet not in the tracker
    duplicated: list[str]
    concurrent: list[str]  # a user message not followed by its own reply (two handled at once)
    audits: dict[str, Audit]
    retried: int = 0  # messages sent again after a refused connection (never reached a pod)

    def row(self) -> str:
        return (
            f"sent {self.sent}, answered {self.answered}, refused {len(self.refused)}, "
            f"lost {len(self.lost)}, duplicated {len(self.duplicated)}, "
            f"handled concurrently or out of order {len(self.concurrent)}; "
            f"sent again after a refused connection {self.retried}"
        )


async def account(url: str, sent: list[Message]) -> Accounting:
    """Audit every conversation's tracker against what was sent to it."""
    by_sender: dict[str, list[Message]] = {}
    for m in sent:
        by_sender.setdefault(m.sender, []).append(m)
    audits: dict[str, Audit] = {}
    lost: list[str] = []
    duplicated: list[str] = []
    concurrent: list[str] = []
    for sender, messages in sorted(by_sender.items()):
        events = await tracker_events(url, sender)
        answered_tags = [m.tag for m in messages if m.answered]
        result = audit(events, answered_tags)
        audits[sender] = result
        lost += [f"{sender}/{t}" for t in result.lost]
        duplicated += [f"{sender}/{t}" for t in result.duplicated]
        concurrent += [f"{sender}/{t}" for t in result.out_of_order]
    return Accounting(
        sent=len(sent),
        answered=sum(1 for m in sent if m.answered),
        refused=[f"{m.sender}/{m.tag}: {m.error}" for m in sent if not m.answered],
        lost=lost,
        duplicated=duplicated,
        concurrent=concurrent,
        audits=audits,
        retried=sum(1 for m in sent if m.retries),
    )


def replicasets(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    data = cluster.control_plane.get_json("replicasets", "-n", namespace, "-l", selector)
    return list((data or {}).get("items", []))


def pod_log(cluster: Cluster, namespace: str, pod: str) -> str:
    with contextlib.suppress(Exception):
        return cluster.kubectl("-n", namespace, "logs", pod, "--all-containers", check=False).stdout
    return ""


# ---------------------------------------------------------------- the operator's rollouts


def pod_env(pod: dict[str, Any]) -> dict[str, str]:
    container = pod["spec"]["containers"][0]
    return {e["name"]: e.get("value", "<from secret>") for e in container.get("env") or []}


def template_pin(cluster: Cluster, ns: str, deployment: str) -> str | None:
    """The fingerprint the operator injected into the Deployment's template (None: not yet)."""
    found = cluster.control_plane.get_json("deployment", deployment, "-n", ns)
    containers = (found or {}).get("spec", {}).get("template", {}).get("spec", {})
    for env in (containers.get("containers") or [{}])[0].get("env") or []:
        if env["name"] == "TURNSTILE_EXPECT_LOCK_STORE":
            return str(env["value"])
    return None


def wait_pin(cluster: Cluster, ns: str, deployment: str, timeout: float = 180) -> str:
    """Wait until the operator has put a section's fingerprint into the Deployment's template."""
    found = wait_for(f"{deployment}'s template carrying the section's fingerprint",
                     lambda: template_pin(cluster, ns, deployment), timeout=timeout)  # fmt: skip
    return str(found)


def wait_rolled(cluster: Cluster, ns: str, app: str, pin: str) -> list[dict[str, Any]]:
    """Wait until the Deployment's only pods are 2 Ready ones expecting ``pin``."""

    def rolled() -> list[dict[str, Any]] | None:
        found = pods(cluster, ns, f"app={app}")
        if len(found) == 2 and all(is_ready(p) and pod_env(p).get(
                "TURNSTILE_EXPECT_LOCK_STORE") == pin for p in found):  # fmt: skip
            return found
        return None

    try:
        return wait_for(f"{app} rolled onto {pin}", rolled, timeout=300, interval=1)
    except Exception:
        print(cluster.kubectl("-n", ns, "get", "pods,rs,events", "-o", "wide", check=False).stdout)
        raise
