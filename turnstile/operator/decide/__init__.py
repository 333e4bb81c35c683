"""Pure decisions: rendered config, ConfigMap objects, status and Events, Secret data,
rollout checksums and patches. No kopf, no Kubernetes client, no I/O."""
