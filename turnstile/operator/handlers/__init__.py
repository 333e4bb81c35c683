"""The kopf glue. Importing :mod:`.stores` and :mod:`.rollout` registers their handlers with
kopf's default registry; ``turnstile operator`` (:func:`turnstile.cli.operator_command`) imports
both, then runs kopf."""
