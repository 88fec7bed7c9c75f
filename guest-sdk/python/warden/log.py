"""Logs that go to the run's log (bounded by the run's log budget), through
``wasi:logging``. ``print`` (stdout) and stderr also land in the run's log::

    from warden import log

    log.info("starting")
    log.warn(f"{n} retries")

Importing :mod:`warden` also puts a :class:`WardenHandler` on the root
logger (level ``INFO``), so the standard :mod:`logging` module lands there
too, with the logger's name as the context (``agent`` for the root logger).
"""

from __future__ import annotations

import logging

from wit_world.imports.logging import Level, log

__all__ = ["WardenHandler", "debug", "error", "info", "trace", "warn"]

CONTEXT = "agent"


def trace(message: str) -> None:
    log(Level.TRACE, CONTEXT, message)


def debug(message: str) -> None:
    log(Level.DEBUG, CONTEXT, message)


def info(message: str) -> None:
    log(Level.INFO, CONTEXT, message)


def warn(message: str) -> None:
    log(Level.WARN, CONTEXT, message)


def error(message: str) -> None:
    log(Level.ERROR, CONTEXT, message)


class WardenHandler(logging.Handler):
    """Sends :mod:`logging` records to ``wasi:logging``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            n = record.levelno
            level = (
                Level.CRITICAL
                if n >= logging.CRITICAL
                else Level.ERROR
                if n >= logging.ERROR
                else Level.WARN
                if n >= logging.WARNING
                else Level.INFO
                if n >= logging.INFO
                else Level.DEBUG
                if n >= logging.DEBUG
                else Level.TRACE
            )
            context = CONTEXT if record.name == "root" else record.name
            log(level, context, self.format(record))
        except Exception:
            self.handleError(record)


def _install() -> None:
    root = logging.getLogger()
    if not any(isinstance(h, WardenHandler) for h in root.handlers):
        root.addHandler(WardenHandler())
        root.setLevel(logging.INFO)


_install()
