"""Thin Kubernetes I/O for config rollout: read what a namespace holds, write what was decided.

Every decision lives in :mod:`turnstile.operator.decide.rollout`; this module only moves raw JSON
between the API server and those pure functions. It speaks JSON paths directly (through the
``kubernetes`` client's authenticated ``ApiClient``) instead of the generated models: rollout
needs a handful of fields, strategic-merge and merge patches with explicit content types, and
``data`` of Secrets that it hashes without ever decoding or logging.

Calls are blocking and run in a worker thread (:func:`asyncio.to_thread`), so the kopf event
loop never waits on the network.

Errors: a call the API server refuses or fails raises
:class:`~turnstile.operator.model.errors.KubeError` (method, path, status). A 404 is not an error
here: a missing object reads as ``None``, and a workload deleted between read and patch is
simply skipped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Final

import urllib3
from kubernetes.client.exceptions import ApiException

from turnstile.operator.decide.credentials import SecretObject
from turnstile.operator.kube.client import REQUEST_TIMEOUT, api_client
from turnstile.operator.model.errors import ApiUnreachableError, KubeError
from turnstile.operator.model.kinds import WORKLOAD_KINDS

__all__ = [
    "STORE_PLURALS",
    "Kube",
]

logger = logging.getLogger(__name__)

GROUP: Final = "turnstile.dev"
VERSION: Final = "v1alpha1"
#: Store kind -> plural, as the CRDs define them.
STORE_PLURALS: Final = {"LockStore": "lockstores", "TimerStore": "timerstores"}
_WORKLOAD_PLURALS: Final = {"Deployment": "deployments", "StatefulSet": "statefulsets"}
_STRATEGIC: Final = "application/strategic-merge-patch+json"
_MERGE: Final = "application/merge-patch+json"
_COMPONENT: Final = "turnstile-operator"


class Kube:
    """The API calls rollout makes; construct with :meth:`from_environment`."""

    def __init__(self, api_client: Any) -> None:
        self._api = api_client
        self._instance = f"{socket.gethostname()}-{os.getpid()}"

    @classmethod
    def from_environment(cls) -> Kube:
        """In-cluster ServiceAccount if present, else ``$KUBECONFIG`` / ``~/.kube/config``."""
        return cls(api_client())

    # ------------------------------------------------------------------------ transport

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        params = self._api.param_serialize(
            method=method,
            resource_path=path,
            query_params=list((query or {}).items()),
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._api.call_api(*params, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeError(
                f"{method} {path}: HTTP {exc.status} {exc.reason}", status=exc.status
            ) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ApiUnreachableError(
                f"{method} {path}: the API server did not answer ({type(exc).__name__})"
            ) from exc
        data = response.read()
        if response.status == 404:
            return None
        if not 200 <= response.status < 300:
            detail = data.decode(errors="replace")[:300] if data else ""
            raise KubeError(
                f"{method} {path}: HTTP {response.status} {detail}", status=response.status
            )
        return json.loads(data) if data else None

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self._request, method, path, **kwargs)

    # ---------------------------------------------------------------------------- reads

    async def list_stores(self, namespace: str) -> list[dict[str, Any]]:
        """Every LockStore and TimerStore in ``namespace`` (raw objects, ``kind`` set)."""
        stores: list[dict[str, Any]] = []
        for kind, plural in STORE_PLURALS.items():
            got = await self._call(
                "GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}"
            )
            for item in (got or {}).get("items", []):
                item.setdefault("kind", kind)
                stores.append(item)
        return stores

    async def list_workloads(self, namespace: str) -> list[tuple[str, dict[str, Any]]]:
        """Every Deployment and StatefulSet in ``namespace`` as ``(kind, object)``."""
        found: list[tuple[str, dict[str, Any]]] = []
        for kind in WORKLOAD_KINDS:
            plural = _WORKLOAD_PLURALS[kind]
            got = await self._call("GET", f"/apis/apps/v1/namespaces/{namespace}/{plural}")
            found.extend((kind, item) for item in (got or {}).get("items", []))
        return found

    async def config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """A ConfigMap's ``data``, or ``None`` if it does not exist."""
        got = await self._call("GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}")
        return None if got is None else dict(got.get("data") or {})

    async def secret(self, namespace: str, name: str) -> SecretObject | None:
        """A Secret's labels and ``data`` (base64, never decoded); ``None`` if it does not exist."""
        got = await self._call("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
        return None if got is None else SecretObject.from_body(got)

    # --------------------------------------------------------------------------- writes

    async def patch_workload(
        self, namespace: str, kind: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Strategic-merge ``patch`` into a workload; ``None`` if it is gone."""
        plural = _WORKLOAD_PLURALS[kind]
        result: dict[str, Any] | None = await self._call(
            "PATCH",
            f"/apis/apps/v1/namespaces/{namespace}/{plural}/{name}",
            body=dict(patch),
            content_type=_STRATEGIC,
        )
        return result

    async def patch_store_status(
        self, namespace: str, kind: str, name: str, patch: Mapping[str, Any]
    ) -> None:
        """Merge-patch a store's status (the ``status`` subresource, else the object)."""
        base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{STORE_PLURALS[kind]}/{name}"
        done = await self._call("PATCH", f"{base}/status", body=dict(patch), content_type=_MERGE)
        if done is None:
            # No status subresource (or the store is gone): patching the object is the same
            # merge; if the store is gone this is a second harmless 404.
            await self._call("PATCH", base, body=dict(patch), content_type=_MERGE)

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
            "source": {"component": _COMPONENT},
            "reportingComponent": f"{GROUP}/operator",
            "reportingInstance": self._instance[:128],
        }
        try:
            await self._call("POST", f"/api/v1/namespaces/{namespace}/events", body=body)
        except KubeError as exc:
            logger.warning("could not record event %s on %s: %s", reason, meta.get("name"), exc)
