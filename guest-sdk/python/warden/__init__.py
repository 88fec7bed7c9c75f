"""Write Warden agents in Python.

An agent is a WebAssembly component of the ``warden:agent/agent`` world. With
this package it is a plain function over JSON values::

    import warden

    @warden.agent
    def run(input):
        warden.log.info(f"greeting {input['name']}")
        return {"greeting": f"hello, {input['name']}"}

Build it with componentize-py, which generates the world's bindings (the
``wit_world`` package this SDK calls) from ``wit/`` at build time::

    componentize-py -d wit -w agent componentize app \\
        -p AGENT_DIR -p guest-sdk/python -o agent.wasm

and run it with ``warden run agent.wasm``.

The agent reaches the world only through what the run was granted:
:mod:`warden.llm` (chat with tools, embeddings), :mod:`warden.http`
(requests over ``wasi:http``), :mod:`warden.kv` (key-value storage in the
agent's own namespace), :mod:`warden.config`, :mod:`warden.log` (also the
standard ``logging`` module) and :mod:`warden.context`. Anything not granted
raises an error the agent can catch.
"""

from . import config, context, http, kv, llm, log
from ._agent import agent
from ._errors import (
    AgentError,
    BudgetExhausted,
    HttpError,
    InvalidRequest,
    KvError,
    LlmError,
    LlmTimeout,
    ModelNotAllowed,
    ProviderError,
    RateLimited,
)

__all__ = [
    "AgentError",
    "BudgetExhausted",
    "HttpError",
    "InvalidRequest",
    "KvError",
    "LlmError",
    "LlmTimeout",
    "ModelNotAllowed",
    "ProviderError",
    "RateLimited",
    "agent",
    "config",
    "context",
    "http",
    "kv",
    "llm",
    "log",
]
