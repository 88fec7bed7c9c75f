"""Config values the run was given (``--config KEY=VALUE``, the agent's
manifest), through ``wasi:config/store``::

    from warden import config

    greeting = config.get("greeting") or "hello"
"""

from __future__ import annotations

from componentize_py_types import Err
from wit_world.imports import wasi_config_store as _store

__all__ = ["get", "get_all"]


def get(key: str) -> str | None:
    """The value of ``key``, if the run has one."""
    try:
        return _store.get(key)
    except Err:
        return None


def get_all() -> dict[str, str]:
    """Every config value of the run."""
    try:
        return dict(_store.get_all())
    except Err:
        return {}
