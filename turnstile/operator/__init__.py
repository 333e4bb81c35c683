"""The Turnstile operator: LockStore and TimerStore resources wired to bots' ``endpoints.yml``.

Four layers, each importing only the ones below it (import-linter contracts in
``pyproject.toml``):

* :mod:`~turnstile.operator.model` -- pure facts. :mod:`~turnstile.operator.model.kinds` names
  the API group, the two kinds, plurals, labels, annotations and the finalizer, once;
  :mod:`~turnstile.operator.model.specs` reads a store's spec into typed values;
  :mod:`~turnstile.operator.model.crds` generates the CRDs from the same facts;
  :mod:`~turnstile.operator.model.errors` holds the errors every layer raises.
* :mod:`~turnstile.operator.decide` -- pure decisions, unit-tested without a cluster.
  :mod:`~turnstile.operator.decide.render` turns specs into ``endpoints.yml`` sections;
  :mod:`~turnstile.operator.decide.configmaps` decides the ConfigMap object;
  :mod:`~turnstile.operator.decide.conditions` the status and the Events;
  :mod:`~turnstile.operator.decide.credentials` what Secret data means;
  :mod:`~turnstile.operator.decide.rollout` each workload's checksum and patch;
  :mod:`~turnstile.operator.decide.launcher` whether a bot starts through plain ``rasa``;
  :mod:`~turnstile.operator.decide.unwatched` which stores no operator serves.
* :mod:`~turnstile.operator.kube` -- the one Kubernetes client (reads, writes, status
  patches, Events; one 404/409 policy). No decisions.
* :mod:`~turnstile.operator.handlers` -- the kopf glue:
  :mod:`~turnstile.operator.handlers.stores` (reconcile, re-check, clean up),
  :mod:`~turnstile.operator.handlers.rollout` (config rollout, debounced by
  :mod:`~turnstile.operator.handlers.debounce`), :mod:`~turnstile.operator.handlers.unwatched`.

Beside the layers: :mod:`~turnstile.operator.config` (environment settings),
:mod:`~turnstile.operator.probes` (the store library's Redis probe) and
:mod:`~turnstile.operator.metrics` (Prometheus series).

Nothing in ``turnstile.stores`` imports this package (an import-linter contract).
"""
