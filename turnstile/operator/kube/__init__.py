"""The one Kubernetes client the operator uses: :class:`~.client.Kube`."""

from turnstile.operator.kube.client import Kube, api_client

__all__ = ["Kube", "api_client"]
