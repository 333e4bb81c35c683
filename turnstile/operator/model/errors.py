"""The exceptions of the operator package.

Every failure a store can be in ends as a condition on that store, never as a crash: each
exception below carries the condition ``reason`` it maps to, and a message that names the
field, Secret or ConfigMap at fault. No message ever carries a Secret's value (credentials are
kept out of exception text by construction, and :func:`turnstile.operator.decide.credentials.redact`
scrubs what comes back from Redis as a second line of defence).

The tree::

    OperatorError                       reason: InternalError
     ├── SpecError                      InvalidSpec: a spec the schema should have refused
     ├── SecretError                    SecretNotFound / SecretKeyNotFound
     │    ├── SecretNotOptedInError     SecretNotOptedIn: the Secret lacks the label
     │    └── SecretValueError          SecretValueUnusable: not UTF-8, or mangled by Rasa's ${VAR}
     │                                  turnstile.dev/store-secret=true (never read further)
     ├── ConflictError                  ConfigMapConflict: two stores of one kind, one ConfigMap
     ├── EndpointsYamlError             InvalidEndpointsYaml: the ConfigMap's key is not a
     │                                  YAML mapping, so it cannot be merged without losing data
     ├── BaseError                      BaseNotFound / BaseInvalid / BaseConflict:
     │                                  spec.configMap.base is missing, does not load, or
     │                                  the stores of one key disagree: nothing is composed
     └── KubeError                      KubernetesError: the API server refused or failed a call
          └── ApiUnreachableError       KubernetesError: no answer at all (refused, reset,
                                        timed out): an outage, not a fact about the store, so
                                        the reconcile writes nothing and the next re-check
                                        tries again
"""

from __future__ import annotations


class OperatorError(Exception):
    """The root of every error the operator raises; ``reason`` is a condition reason."""

    reason = "InternalError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SpecError(OperatorError, ValueError):
    """A spec the CRD schema should have refused: ``field: what is accepted (got value)``."""

    reason = "InvalidSpec"

    def __init__(self, field: str, expected: str, value: object = None) -> None:
        got = "" if value is None else f" (got {shown(value)})"
        super().__init__(f"{field}: {expected}{got}")
        self.field = field


#: Longest ``repr`` of a bad value an error message quotes whole.
SHOWN_MAX = 80


def shown(value: object) -> str:
    """``repr(value)``, cut to its first characters (and its length said) when it is huge."""
    text = repr(value)
    if len(text) <= SHOWN_MAX:
        return text
    size = f"{len(value)} characters" if isinstance(value, str) else f"{len(text)} characters"
    return f"{text[:SHOWN_MAX - 20]}... ({size})"


class SecretError(OperatorError):
    """A referenced Secret, or a key in it, does not exist (yet)."""

    reason = "SecretNotFound"

    def __init__(self, message: str, *, missing_key: bool = False) -> None:
        super().__init__(message)
        if missing_key:
            self.reason = "SecretKeyNotFound"


class SecretValueError(SecretError):
    """A referenced Secret's value cannot work in a bot (not UTF-8, or mangled by Rasa)."""

    reason = "SecretValueUnusable"


class SecretNotOptedInError(SecretError):
    """A referenced Secret exists but is not marked as meant for stores."""

    reason = "SecretNotOptedIn"


class ConflictError(OperatorError):
    """Two stores of the same kind name the same ConfigMap key."""

    reason = "ConfigMapConflict"


class EndpointsYamlError(OperatorError):
    """The ConfigMap already holds something under the key that is not a YAML mapping."""

    reason = "InvalidEndpointsYaml"

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        #: What is wrong with the file, without advice (``not valid YAML at line 3``).
        self.detail = detail or message

    @classmethod
    def not_yaml(cls, line: int | None) -> EndpointsYamlError:
        """The file does not parse (``line`` 1-based, when the parser knows it)."""
        where = f" at line {line}" if line is not None else ""
        return cls(
            f"the existing endpoints.yml is not valid YAML{where}; fix or remove it so Turnstile "
            "can merge its section without losing yours",
            detail=f"not valid YAML{where}",
        )

    @classmethod
    def not_mapping(cls, found: str) -> EndpointsYamlError:
        """The file parses to ``found`` (a type name) instead of a mapping of sections."""
        what = f"a {found}, not a mapping of sections"
        return cls(f"the existing endpoints.yml is {what}", detail=what)


class BaseError(OperatorError):
    """``spec.configMap.base`` names a ConfigMap key that is missing (``BaseNotFound``), whose
    text Rasa could not load (``BaseInvalid``), or the stores writing one key name different
    bases (``BaseConflict``); the composed ConfigMap stays as it is."""

    reason = "BaseNotFound"

    def __init__(self, message: str, *, reason: str = "BaseNotFound") -> None:
        super().__init__(message)
        self.reason = reason


class KubeError(OperatorError):
    """The Kubernetes API refused or failed a call (after retries)."""

    reason = "KubernetesError"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ApiUnreachableError(KubeError):
    """The API server did not answer (connection refused, reset or timed out)."""
