"""The entry point: :func:`agent` turns ``def run(input) -> output`` into the
world's ``run`` export."""

from __future__ import annotations

import dataclasses
import json
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import wit_world
from componentize_py_types import Err

from ._errors import AgentError, HttpError, KvError, LlmError

# Exceptions whose message is the whole story (the SDK's own read like the
# Rust SDK's errors); any other is shown as `ExceptionType: message`.
_PLAIN = (AgentError, LlmError, KvError, HttpError)

F = TypeVar("F", bound=Callable[[Any], Any])


class _Failed(Exception):
    """The run's error message, as is."""


def agent(fn: F) -> F:
    """Makes ``fn`` the agent's ``run``.

    ``fn`` takes the run's input as a parsed JSON value (``None`` when the
    input is empty or ``null``) and returns any JSON-serialisable value
    (dataclasses too), the run's output. An uncaught exception ends the run
    as ``guest_error``: an :class:`AgentError` (or one of the SDK's own:
    :class:`LlmError`, :class:`KvError`, :class:`HttpError`) with its message
    as is, any other as ``ExceptionType: message`` (its traceback goes to
    stderr, in the run's log).

    componentize-py looks for a ``WitWorld`` class in the app module; this
    sets one there, so the decorated function must live in that module.
    """

    class WitWorld(wit_world.WitWorld):
        def run(self, input: str) -> str:
            try:
                return _invoke(fn, input)
            except _Failed as e:
                raise Err(str(e)) from None
            except BaseException as e:  # never a trap: always guest_error
                traceback.print_exc()  # to stderr: the run's log
                raise Err(_describe(e)) from None
            finally:
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except Exception:
                        pass

    setattr(sys.modules[fn.__module__], "WitWorld", WitWorld)
    return fn


def _invoke(fn: Callable[[Any], Any], text: str) -> str:
    """Decodes the JSON input, calls the agent, encodes its output."""
    try:
        value = json.loads(text) if text.strip() else None
    except ValueError as e:
        raise _Failed(f"invalid input: {e}") from None
    try:
        output = fn(value)
    except _PLAIN as e:
        raise _Failed(str(e)) from None
    try:
        return json.dumps(
            output,
            default=_encode,
            ensure_ascii=False,
            allow_nan=False,
            separators=(",", ":"),
        )
    except (TypeError, ValueError) as e:
        raise _Failed(f"cannot encode the output as JSON: {e}") from None


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _describe(e: BaseException) -> str:
    message = str(e)
    name = type(e).__name__
    return f"{name}: {message}" if message else name
