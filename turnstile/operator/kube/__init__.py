"""The one Kubernetes client the operator uses: :class:`~.client.Kube`."""
