"""The one thin layer that reads and writes Kubernetes objects for the store handlers.

Decisions are made elsewhere (:mod:`turnstile.operator.decide.configmaps` decides a ConfigMap's new
content, :mod:`turnstile.operator.decide.credentials` what Secret data means); this module moves raw
JSON between them and the API server through the ``kubernetes`` client's authenticated
``ApiClient``. Calls are blocking and run in worker threads so kopf's event loop never waits.

A write that loses a race (HTTP 409: someone changed the ConfigMap since it was read, or
created it first) is retried with a fresh read, a bounded number of times. A missing object
reads as ``None``. No answer at all (refused, reset, timed out) raises
:class:`~turnstile.operator.model.errors.ApiUnreachableError`. Everything else raises
:class:`~turnstile.operator.model.errors.KubeError`, whose message names the method, path and
status, never a Secret's content.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, Final

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from turnstile.operator.decide.credentials import SecretObject
from turnstile.operator.model.errors import ApiUnreachableError, KubeError
from turnstile.operator.model.kinds import GROUP, VERSION

logger = logging.getLogger(__name__)

CONFLICT_ATTEMPTS: Final = 8
#: (connect, read) seconds for one call: a hung API server must not hold a store's lock (and
#: with it every later re-check of that store) forever.
REQUEST_TIMEOUT: Final = (5.0, 30.0)


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
    """The API calls the store handlers make."""

    def __init__(self, api_client: Any) -> None:
        self._api = api_client

    @classmethod
    def from_environment(cls) -> Kube:
        """In-cluster ServiceAccount if present, else ``$KUBECONFIG`` / ``~/.kube/config``."""
        return cls(api_client())

    def _request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        params = self._api.param_serialize(
            method=method,
            resource_path=path,
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._api.call_api(*params, _request_timeout=REQUEST_TIMEOUT)
            data = response.read()
            status = response.status
        except ApiException as exc:
            status, data = exc.status, (exc.body or b"")
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ApiUnreachableError(
                f"{method} {path}: the API server did not answer ({type(exc).__name__})"
            ) from exc
        if status == 404 and method == "GET":
            return None
        if not 200 <= status < 300:
            raise KubeError(f"{method} {path}: HTTP {status} {_reason(data)}", status=status)
        return json.loads(data) if data else None

    async def _call(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        return await asyncio.to_thread(self._request, method, path, body, content_type)

    async def list_everywhere(self, plural: str) -> list[dict[str, Any]]:
        """Every store of one plural in every namespace (a cluster-wide list)."""
        got = await self._call("GET", f"/apis/{GROUP}/{VERSION}/{plural}")
        return list((got or {}).get("items") or [])

    async def patch_status(
        self, namespace: str, plural: str, name: str, patch: Mapping[str, Any]
    ) -> None:
        """JSON-merge-patch a store's ``status`` subresource (a store gone meanwhile: nothing)."""
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}/{name}/status"
        try:
            await self._call("PATCH", path, dict(patch), "application/merge-patch+json")
        except KubeError as exc:
            if exc.status != 404:
                raise

    async def secret(self, namespace: str, name: str) -> SecretObject | None:
        """A Secret's labels and ``data`` (base64 values), or ``None`` when it does not exist."""
        secret = await self._call("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
        return None if secret is None else SecretObject.from_body(secret)

    async def configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._call("GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}")  # type: ignore[no-any-return]

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
                    return await self._call("POST", base, desired)  # type: ignore[no-any-return]
                return await self._call("PUT", f"{base}/{name}", desired)  # type: ignore[no-any-return]
            except KubeError as exc:
                if exc.status != 409 or attempt == CONFLICT_ATTEMPTS - 1:
                    raise
                logger.debug("ConfigMap %s/%s changed under us; re-reading", namespace, name)
                await asyncio.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover


def _reason(data: bytes | str) -> str:
    """The API's ``Status.message`` (which never holds Secret data), or nothing."""
    try:
        status = json.loads(data)
    except (ValueError, TypeError):
        return ""
    return str(status.get("message", ""))[:300] if isinstance(status, dict) else ""
