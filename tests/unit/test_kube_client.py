"""``Kube._send``: the one 404/409 policy of the operator's Kubernetes client."""

from __future__ import annotations

import json
from typing import Any

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from turnstile.operator.kube.client import REQUEST_TIMEOUT, Kube
from turnstile.operator.model.errors import ApiUnreachableError, KubeError


class _Response:
    def __init__(self, body: Any) -> None:
        self.data = b"" if body is None else json.dumps(body).encode()


def _answer(body: Any) -> Any:
    def call(*args: Any, **kwargs: Any) -> _Response:
        assert kwargs["_preload_content"] is False
        assert kwargs["_request_timeout"] == REQUEST_TIMEOUT
        return _Response(body)

    return call


def _refuse(status: int, message: str = "nope") -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        exc = ApiException(status=status, reason="Reason")
        exc.body = json.dumps({"kind": "Status", "message": message})
        raise exc

    return call


def test_json_in_json_out() -> None:
    assert Kube._send("GET", "/x", _answer({"a": 1})) == {"a": 1}
    assert Kube._send("PATCH", "/x", _answer(None)) is None


@pytest.mark.parametrize("method", ["GET", "PATCH"])
def test_a_missing_object_reads_and_patches_as_none(method: str) -> None:
    assert Kube._send(method, "/x", _refuse(404)) is None


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_a_404_on_create_or_replace_is_an_error(method: str) -> None:
    with pytest.raises(KubeError) as caught:
        Kube._send(method, "/api/v1/namespaces/gone/configmaps", _refuse(404, "namespace gone"))
    assert caught.value.status == 404
    assert f"{method} /api/v1/namespaces/gone/configmaps: HTTP 404 namespace gone" in str(
        caught.value
    )


def test_a_conflict_carries_its_status_for_the_retry() -> None:
    with pytest.raises(KubeError) as caught:
        Kube._send("PUT", "/x", _refuse(409))
    assert caught.value.status == 409


def test_no_answer_is_unreachable_not_an_api_error() -> None:
    def call(*args: Any, **kwargs: Any) -> Any:
        raise urllib3.exceptions.MaxRetryError(None, "/x", "refused")  # type: ignore[arg-type]

    with pytest.raises(ApiUnreachableError):
        Kube._send("GET", "/x", call)
