"""The one Kubernetes client of the operator: reads, writes, status patches and Events.

Decisions are made elsewhere (:mod:`turnstile.operator.decide`); this module moves raw JSON
between them and the API server through the official ``kubernetes`` client's typed APIs
(``CoreV1Api``, ``AppsV1Api``, ``CustomObjectsApi``), with ``_preload_content=False`` so that
objects stay plain dicts: rollout hashes Secret ``data`` without ever decoding it, and the store
handlers write back ConfigMaps they read. Calls are blocking and run in worker threads
(:func:`asyncio.to_thread`) so kopf's event loop never waits.

One policy for every call (:meth:`Kube._send`):

* **404** from a read or a patch: the object is gone; the call returns ``None`` (a workload
  deleted between read and patch is simply skipped, a store gone meanwhile gets no status).
  A 404 from a create or replace (its namespace is gone) is a :class:`KubeError`.
* **409** from a ConfigMap write (someone changed it since it was read, or created it first):
  :meth:`Kube.update_configmap` reads again and re-decides, a bounded number of times.
* No answer at all (refused, reset, timed out) raises
  :class:`~turnstile.operator.model.errors.ApiUnreachableError`.
* Everything else raises :class:`~turnstile.operator.model.errors.KubeError`, whose message
  names the method, path and status and the API's ``Status.message``, never a Secret's content.

Events are advisory (:meth:`Kube.post_event`): a failure is logged, never raised.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, Final

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from turnstile.operator.decide.credentials import SecretObject
from turnstile.operator.model.errors import ApiUnreachableError, KubeError
from turnstile.operator.model.kinds import (
    COMPONENT,
    GROUP,
    REPORTING_COMPONENT,
    STORE_PLURALS,
    VERSION,
    WORKLOAD_KINDS,
)

__all__ = ["CONFLICT_ATTEMPTS", "REQUEST_TIMEOUT", "Kube", "api_client"]

logger = logging.getLogger(__name__)

CONFLICT_ATTEMPTS: Final = 8
#: (connect, read) seconds for one call: a hung API server must not hold a store's lock (and
#: with it every later re-check of that store) forever.
REQUEST_TIMEOUT: Final = (5.0, 30.0)
_STRATEGIC: Final = "application/strategic-merge-patch+json"
_MERGE: Final = "application/merge-patch+json"
#: Methods whose 404 means "gone, nothing to do" rather than an error.
_MISSING_IS_NONE: Final = frozenset({"GET", "PATCH"})


def api_client() -> Any:
    """In-cluster ServiceAccount if present, else ``$KUBECONFIG`` / ``~/.kube/config``."""
    config: Any = kubernetes.config
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    configuration = kubernetes.client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = 32
    return kubernetes.client.ApiClient(configuration)


class Kube:
    """Every API call the operator makes itself; construct with :meth:`from_environment`."""

    def __init__(self, api_client: Any) -> None:
        self._core: Any = kubernetes.client.CoreV1Api(api_client)
        self._apps: Any = kubernetes.client.AppsV1Api(api_client)
        self._custom: Any = kubernetes.client.CustomObjectsApi(api_client)
        self._version: Any = kubernetes.client.VersionApi(api_client)
        self._instance = f"{socket.gethostname()}-{os.getpid()}"

    @classmethod
    def from_environment(cls) -> Kube:
        """In-cluster ServiceAccount if present, else ``$KUBECONFIG`` / ``~/.kube/config``."""
        return cls(api_client())

    # ------------------------------------------------------------------------ transport

    @staticmethod
    def _send(method: str, path: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one typed-API call under the module's 404/409 policy; JSON in, JSON out."""
        try:
            response = call(
                *args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs
            )
            data = response.data
        except ApiException as exc:
            if exc.status == 404 and method in _MISSING_IS_NONE:
                return None
            detail = _reason(exc.body) or str(exc.reason or "")
            raise KubeError(
                f"{method} {path}: HTTP {exc.status} {detail}", status=exc.status
            ) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ApiUnreachableError(
                f"{method} {path}: the API server did not answer ({type(exc).__name__})"
            ) from exc
        return json.loads(data) if data else None

    async def _call(
        self, method: str, path: str, call: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        return await asyncio.to_thread(self._send, method, path, call, *args, **kwargs)

    # ---------------------------------------------------------------------------- reads

    async def answers(self) -> bool:
        """Whether the API server answers at all (``GET /version``; any HTTP answer counts)."""
        try:
            await self._call("GET", "/version", self._version.get_code)
        except ApiUnreachableError:
            return False
        except KubeError:
            return True
        return True

    async def workload_exists(self, namespace: str, kind: str, name: str) -> bool:
        """Whether a Deployment or StatefulSet of that name exists in ``namespace`` (a list by
        field selector: the operator may list and patch workloads, never get them)."""
        listing = {
            "Deployment": ("deployments", self._apps.list_namespaced_deployment),
            "StatefulSet": ("statefulsets", self._apps.list_namespaced_stateful_set),
        }
        plural, call = listing[kind]
        path = f"/apis/apps/v1/namespaces/{namespace}/{plural}?fieldSelector=metadata.name={name}"
        got = await self._call("GET", path, call, namespace, field_selector=f"metadata.name={name}")
        return bool((got or {}).get("items"))

    async def list_everywhere(self, plural: str) -> list[dict[str, Any]]:
        """Every store of one plural in every namespace (a cluster-wide list)."""
        got = await self._call(
            "GET", f"/apis/{GROUP}/{VERSION}/{plural}",
            self._custom.list_cluster_custom_object, GROUP, VERSION, plural,
        )  # fmt: skip
        return list((got or {}).get("items") or [])

    async def list_stores(self, namespace: str) -> list[dict[str, Any]]:
        """Every LockStore and TimerStore in ``namespace`` (raw objects, ``kind`` set)."""
        stores: list[dict[str, Any]] = []
        for kind, plural in STORE_PLURALS.items():
            got = await self._call(
                "GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}",
                self._custom.list_namespaced_custom_object, GROUP, VERSION, namespace, plural,
            )  # fmt: skip
            for item in (got or {}).get("items", []):
                item.setdefault("kind", kind)
                stores.append(item)
        return stores

    async def list_workloads(self, namespace: str) -> list[tuple[str, dict[str, Any]]]:
        """Every Deployment and StatefulSet in ``namespace`` as ``(kind, object)``."""
        listing = {
            "Deployment": ("deployments", self._apps.list_namespaced_deployment),
            "StatefulSet": ("statefulsets", self._apps.list_namespaced_stateful_set),
        }
        found: list[tuple[str, dict[str, Any]]] = []
        for kind in WORKLOAD_KINDS:
            plural, call = listing[kind]
            path = f"/apis/apps/v1/namespaces/{namespace}/{plural}"
            got = await self._call("GET", path, call, namespace)
            found.extend((kind, item) for item in (got or {}).get("items", []))
        return found

    async def configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A ConfigMap, or ``None`` if it does not exist."""
        return await self._call(  # type: ignore[no-any-return]
            "GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}",
            self._core.read_namespaced_config_map, name, namespace,
        )  # fmt: skip

    async def config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """A ConfigMap's ``data``, or ``None`` if it does not exist."""
        got = await self.configmap(namespace, name)
        return None if got is None else dict(got.get("data") or {})

    async def secret(self, namespace: str, name: str) -> SecretObject | None:
        """A Secret's labels and ``data`` (base64, never decoded); ``None`` if it does not exist."""
        got = await self._call(
            "GET", f"/api/v1/namespaces/{namespace}/secrets/{name}",
            self._core.read_namespaced_secret, name, namespace,
        )  # fmt: skip
        return None if got is None else SecretObject.from_body(got)

    # --------------------------------------------------------------------------- writes

    async def update_configmap(
        self,
        namespace: str,
        name: str,
        decide: Callable[[Mapping[str, Any] | None], dict[str, Any] | None],
    ) -> dict[str, Any] | None:
        """Read, ``decide`` the new object, write it; on 409 read again (bounded).

        Returns the ConfigMap as it is afterwards (``None`` if it does not exist).
        """
        base = f"/api/v1/namespaces/{namespace}/configmaps"
        for attempt in range(CONFLICT_ATTEMPTS):
            current = await self.configmap(namespace, name)
            desired = decide(current)
            if desired is None:
                return current
            try:
                if current is None:
                    return await self._call(  # type: ignore[no-any-return]
                        "POST", base, self._core.create_namespaced_config_map, namespace, desired
                    )
                return await self._call(  # type: ignore[no-any-return]
                    "PUT", f"{base}/{name}",
                    self._core.replace_namespaced_config_map, name, namespace, desired,
                )  # fmt: skip
            except KubeError as exc:
                if exc.status != 409 or attempt == CONFLICT_ATTEMPTS - 1:
                    raise
                logger.debug("ConfigMap %s/%s changed under us; re-reading", namespace, name)
                await asyncio.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    async def patch_workload(
        self, namespace: str, kind: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Strategic-merge ``patch`` into a workload; ``None`` if it is gone."""
        plural, call = {
            "Deployment": ("deployments", self._apps.patch_namespaced_deployment),
            "StatefulSet": ("statefulsets", self._apps.patch_namespaced_stateful_set),
        }[kind]
        result: dict[str, Any] | None = await self._call(
            "PATCH", f"/apis/apps/v1/namespaces/{namespace}/{plural}/{name}",
            call, name, namespace, dict(patch), _content_type=_STRATEGIC,
        )  # fmt: skip
        return result

    async def patch_store_status(
        self, namespace: str, kind: str, name: str, patch: Mapping[str, Any]
    ) -> None:
        """JSON-merge-patch a store's status: the ``status`` subresource, else the object.

        The one path every status write takes. A store gone meanwhile: nothing happens.
        """
        plural = STORE_PLURALS[kind]
        base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}/{name}"
        where = (GROUP, VERSION, namespace, plural, name, dict(patch))
        done = await self._call(
            "PATCH", f"{base}/status",
            self._custom.patch_namespaced_custom_object_status, *where, _content_type=_MERGE,
        )  # fmt: skip
        if done is None:
            # No status subresource (or the store is gone): patching the object is the same
            # merge; if the store is gone this is a second harmless 404.
            await self._call(
                "PATCH", base,
                self._custom.patch_namespaced_custom_object, *where, _content_type=_MERGE,
            )  # fmt: skip

    async def post_event(
        self,
        namespace: str,
        involved: Mapping[str, Any],
        reason: str,
        message: str,
        *,
        type_: str = "Normal",
    ) -> None:
        """Record a core/v1 Event about ``involved`` (its apiVersion, kind, name, uid).

        Events are advisory: a failure is logged, never raised, so it cannot undo a rollout
        that already happened or make the sync retry it.
        """
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        meta = involved.get("metadata") or {}
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta.get('name', 'object')}.{uuid.uuid4().hex[:16]}",
                "namespace": namespace,
            },
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": COMPONENT},
            "reportingComponent": REPORTING_COMPONENT,
            "reportingInstance": self._instance[:128],
        }
        try:
            await self._call(
                "POST", f"/api/v1/namespaces/{namespace}/events",
                self._core.create_namespaced_event, namespace, body,
            )  # fmt: skip
        except KubeError as exc:
            logger.warning("could not record event %s on %s: %s", reason, meta.get("name"), exc)


def _reason(data: bytes | str | None) -> str:
    """The API's ``Status.message`` (which never holds Secret data), or nothing."""
    if not data:
        return ""
    try:
        status = json.loads(data)
    except (ValueError, TypeError):
        return ""
    return str(status.get("message", ""))[:300] if isinstance(status, dict) else ""
