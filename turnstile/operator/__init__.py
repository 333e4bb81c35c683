"""The Turnstile operator: LockStore and TimerStore resources wired to bots' ``endpoints.yml``.

Layers, from pure to I/O:

* :mod:`~turnstile.operator.specs` reads a store's spec into typed values (and knows the two
  kinds); :mod:`~turnstile.operator.crds` generates the CRDs from the same facts.
* :mod:`~turnstile.operator.render` turns specs into ``endpoints.yml`` sections and merges them
  into a ConfigMap's content; :mod:`~turnstile.operator.configmaps` decides the ConfigMap object
  (labels, owner references, annotations); :mod:`~turnstile.operator.conditions` decides the
  status and the Events; :mod:`~turnstile.operator.credentials` resolves Secret data.
* :mod:`~turnstile.operator.kube` is the one thin layer that reads and writes Kubernetes
  objects; :mod:`~turnstile.operator.probes` runs the store library's probe;
  :mod:`~turnstile.operator.handlers` is the kopf glue; :mod:`~turnstile.operator.metrics`
  holds the Prometheus series.

Nothing in ``turnstile.stores`` imports this package (an import-linter contract).
"""
