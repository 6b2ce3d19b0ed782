"""Logging set-up: JSON lines to ``<state_dir>/recond.log`` (rotated) and readable lines to stderr.

The JSON file is for machines and ``reconctl``; stderr is what journald or a terminal shows.
Every event carries its fields (job id, file, seconds, stage, percent) as keys, not prose.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys

import structlog

from recond.config import Settings

_SHARED_PROCESSORS: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure_logging(settings: Settings, to_file: bool = True) -> None:
    """Route structlog through the standard library to stderr and, optionally, the JSON file."""
    handlers: list[logging.Handler] = []
    stderr = _StderrHandler()
    stderr.setFormatter(_formatter(structlog.dev.ConsoleRenderer(colors=False)))
    handlers.append(stderr)
    if to_file:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        json_file = logging.handlers.RotatingFileHandler(
            settings.log_path, maxBytes=settings.log_max_bytes,
            backupCount=settings.log_backups, encoding="utf-8")
        json_file.setFormatter(_formatter(structlog.processors.JSONRenderer()))
        handlers.append(json_file)

    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(settings.log_level.upper())

    structlog.configure(
        processors=[*_SHARED_PROCESSORS, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the moment (click's runner and pytest swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def _formatter(renderer: structlog.typing.Processor) -> structlog.stdlib.ProcessorFormatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED_PROCESSORS,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
