"""What the run knows about itself: id, attempt, remaining budget::

from warden import context

if context.remaining().tokens == 0:
    ...  # wrap up
"""

from __future__ import annotations

from dataclasses import dataclass

from wit_world.imports import context as _wit

__all__ = ["BudgetRemaining", "attempt", "remaining", "run_id"]


@dataclass
class BudgetRemaining:
    tokens: int | None
    """LLM tokens left; ``None`` when the run has no token budget."""
    cost_usd: float | None
    """USD left; ``None`` when the run has no cost budget."""
    time_ms: int
    """Milliseconds of wall time left."""


def run_id() -> str:
    """This run's id."""
    return _wit.run_id()


def attempt() -> int:
    """The attempt number, from 1."""
    return _wit.attempt()


def remaining() -> BudgetRemaining:
    """Tokens, USD and milliseconds left."""
    r = _wit.remaining()
    return BudgetRemaining(r.tokens, r.cost_usd, r.time_ms)
