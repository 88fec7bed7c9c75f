"""The SDK's exceptions. Each capability raises its own; any exception an
agent does not catch ends the run as ``guest_error``."""

from __future__ import annotations


class AgentError(Exception):
    """Ends the run as ``guest_error`` with exactly this message (other
    uncaught exceptions read ``ExceptionType: message``)."""


class LlmError(Exception):
    """Why an LLM call failed: one subclass per case of the WIT ``error``."""


class ModelNotAllowed(LlmError):
    """The model is not on the run's allow-list (or no LLM was granted)."""

    def __init__(self, model: str) -> None:
        super().__init__(f"model not allowed: {model}")
        self.model = model


class BudgetExhausted(LlmError):
    """The run's token or cost budget is spent: finish with what you have."""

    def __init__(self) -> None:
        super().__init__("the run's LLM budget is exhausted")


class RateLimited(LlmError):
    def __init__(self) -> None:
        super().__init__("the LLM provider is rate limiting")


class InvalidRequest(LlmError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"invalid LLM request: {detail}")
        self.detail = detail


class ProviderError(LlmError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"LLM provider error: {detail}")
        self.detail = detail


class LlmTimeout(LlmError):
    def __init__(self) -> None:
        super().__init__("the LLM request timed out")


class KvError(Exception):
    """A key-value error. ``kind`` is ``access_denied`` (this run was not
    granted key-value storage), ``no_such_bucket``, ``decode`` (the value is
    not what ``get_text``/``get_json`` expected) or ``other``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class HttpError(Exception):
    """Why a request failed; ``denied`` when the host refused it."""

    @property
    def denied(self) -> bool:
        """The host refused the request: not on the allow-list, a forbidden
        address, or over the request budget."""
        return str(self).startswith("denied")
