"""Chat and embeddings with the LLM the host provides, metered against the
run's token and cost budget. The host holds the provider's endpoint and key;
the agent names a model (or takes the host's default)::

    from warden import llm

    answer = llm.chat([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is WebAssembly?"},
    ])
    print(answer.content, answer.usage.completion_tokens)

When the budget runs out, calls raise :class:`BudgetExhausted` and the run
goes on: finish with what you have.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from componentize_py_types import Err
from wit_world.imports import llm as _wit

from ._errors import (
    BudgetExhausted,
    InvalidRequest,
    LlmError,
    LlmTimeout,
    ModelNotAllowed,
    ProviderError,
    RateLimited,
)

__all__ = [
    "BudgetExhausted",
    "ChatResponse",
    "InvalidRequest",
    "LlmError",
    "LlmTimeout",
    "Message",
    "ModelNotAllowed",
    "ProviderError",
    "RateLimited",
    "Tool",
    "ToolCall",
    "Usage",
    "chat",
    "embed",
]

_ROLES = {
    "system": _wit.Role.SYSTEM,
    "user": _wit.Role.USER,
    "assistant": _wit.Role.ASSISTANT,
    "tool": _wit.Role.TOOL,
}


@dataclass
class ToolCall:
    """A tool call the model asked for."""

    id: str
    name: str
    arguments: str
    """JSON text of the arguments, as the model produced it."""

    def args(self) -> dict[str, Any]:
        """The arguments parsed: a dict, empty when they are not a JSON
        object (models do send broken arguments)."""
        try:
            value = json.loads(self.arguments)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass
class Message:
    """One turn of the conversation. ``role`` is ``system``, ``user``,
    ``assistant`` or ``tool``. Plain dicts with the same keys work as well."""

    role: str
    content: str
    tool_call_id: str | None = None
    """For ``tool`` messages: the id of the call this answers."""
    tool_calls: list[ToolCall] = field(default_factory=list)
    """For ``assistant`` messages: the calls the model made."""

    @staticmethod
    def system(content: str) -> Message:
        return Message("system", content)

    @staticmethod
    def user(content: str) -> Message:
        return Message("user", content)

    @staticmethod
    def assistant(content: str, tool_calls: Sequence[ToolCall] = ()) -> Message:
        """An assistant turn; with ``tool_calls``, the turn that asked for
        them (send it back before the tool results)."""
        return Message("assistant", content, tool_calls=list(tool_calls))

    @staticmethod
    def tool_result(call_id: str, content: str) -> Message:
        """The result of the tool call ``call_id``."""
        return Message("tool", content, tool_call_id=call_id)


@dataclass
class Tool:
    """A function the model may call; ``parameters`` is a JSON Schema."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int


@dataclass
class ChatResponse:
    content: str
    tool_calls: list[ToolCall]
    finish_reason: str
    """``stop``, ``length``, ``tool_calls``, ``content_filter`` or ``other``."""
    usage: Usage
    model: str

    def message(self) -> Message:
        """This answer as the assistant turn to append to the conversation."""
        return Message.assistant(self.content, self.tool_calls)


MessageLike = Message | Mapping[str, Any]


def chat(
    messages: Iterable[MessageLike],
    *,
    model: str | None = None,
    tools: Sequence[Tool] | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    json_output: bool = False,
) -> ChatResponse:
    """One chat completion.

    ``model=None`` takes the host's default; ``max_tokens`` is clamped by the
    host to what is left of the budget; ``json_output`` asks for a JSON
    object. Raises a subclass of :class:`LlmError`.
    """
    req = _wit.ChatRequest(
        model=model,
        messages=[_message(m) for m in messages],
        tools=[
            _wit.Tool(t.name, t.description, json.dumps(dict(t.parameters), separators=(",", ":")))
            for t in tools or ()
        ],
        max_tokens=max_tokens,
        temperature=temperature,
        json_output=json_output,
    )
    try:
        reply = _wit.chat(req)
    except Err as e:
        raise _error(e.value) from None
    return ChatResponse(
        content=reply.content,
        tool_calls=[ToolCall(c.id, c.name, c.arguments) for c in reply.tool_calls],
        finish_reason=reply.finish_reason.name.lower(),
        usage=Usage(reply.usage.prompt_tokens, reply.usage.completion_tokens),
        model=reply.model,
    )


def embed(inputs: Sequence[str], *, model: str | None = None) -> list[list[float]]:
    """Embeddings of ``inputs``, one vector each. Raises :class:`LlmError`."""
    try:
        return _wit.embed(model, list(inputs))
    except Err as e:
        raise _error(e.value) from None


def _message(m: MessageLike) -> _wit.Message:
    if isinstance(m, Message):
        role, content, call_id, calls = m.role, m.content, m.tool_call_id, m.tool_calls
    else:
        role, content = m["role"], m.get("content") or ""
        call_id, calls = m.get("tool_call_id"), m.get("tool_calls") or []
    if role not in _ROLES:
        raise ValueError(f"unknown message role {role!r}")
    return _wit.Message(
        role=_ROLES[role],
        content=content,
        tool_call_id=call_id,
        tool_calls=[_tool_call(c) for c in calls],
    )


def _tool_call(c: ToolCall | Mapping[str, Any]) -> _wit.ToolCall:
    if isinstance(c, ToolCall):
        return _wit.ToolCall(c.id, c.name, c.arguments)
    args = c.get("arguments", "{}")
    return _wit.ToolCall(c["id"], c["name"], args if isinstance(args, str) else json.dumps(args))


def _error(e: _wit.Error) -> LlmError:
    if isinstance(e, _wit.Error_ModelNotAllowed):
        return ModelNotAllowed(e.value)
    if isinstance(e, _wit.Error_BudgetExhausted):
        return BudgetExhausted()
    if isinstance(e, _wit.Error_RateLimited):
        return RateLimited()
    if isinstance(e, _wit.Error_InvalidRequest):
        return InvalidRequest(e.value)
    if isinstance(e, _wit.Error_Provider):
        return ProviderError(e.value)
    if isinstance(e, _wit.Error_Timeout):
        return LlmTimeout()
    return LlmError(str(e))
