"""Turnstile: Redis lock and timer stores for replicated Rasa servers.

``turnstile.stores`` is the store library bot pods install (redis-py only);
``turnstile.rasa`` holds the drop-in classes Rasa loads from ``endpoints.yml``;
``turnstile.operator`` is the Kubernetes operator (extra ``[operator]``).
"""

#: The one place the version is written: pyproject reads it, tests check the chart and CHANGELOG.
__version__ = "0.1.0"
