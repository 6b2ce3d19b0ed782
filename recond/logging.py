"""Logging set-up: JSON lines to ``<state_dir>/recond.log`` (rotated) and readable lines to stderr.

The JSON file is for machines and ``reconctl``; stderr is what journald or a terminal shows.
Every event carries its fields (job id, file, seconds, stage, percent) as keys, not prose.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
        json_file = _JsonFileHandler(
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
    # httpx logs each request at info; recond's own "webhook delivered" line says it with the event.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))

    structlog.configure(
        processors=[*_SHARED_PROCESSORS, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


# An error that repeats (a full disk, a database held by another process) is logged once per
# this many seconds, with how often it recurred, not once per loop (issue 18: 58,332 stderr
# lines in 47 s).
REPEAT_LOG_SECONDS = 60.0


class Repeats:
    """Logs each distinct event at most once per REPEAT_LOG_SECONDS, counting the ones held back."""

    def __init__(self, interval: float = REPEAT_LOG_SECONDS) -> None:
        self.interval = interval
        self._last: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def log(self, method: Callable[..., Any], event: str, **fields: Any) -> None:
        """``method(event, **fields)`` (e.g. ``log.warning``) unless it was logged lately."""
        key = f"{event} {fields.get('error', '')}"
        now = time.monotonic()
        with self._lock:
            last, held_back = self._last.get(key, (float("-inf"), 0))
            if now - last < self.interval:
                self._last[key] = (last, held_back + 1)
                return
            self._last[key] = (now, 0)
        method(event, **fields, **({"repeated_since_last_logged": held_back} if held_back else {}))


class _JsonFileHandler(logging.handlers.RotatingFileHandler):
    """The JSON log. A record it cannot write (the state disk is full) goes to stderr anyway;
    the write error itself is told once per REPEAT_LOG_SECONDS, not with a traceback per record."""

    _told_at = float("-inf")

    def handleError(self, record: logging.LogRecord) -> None:
        if time.monotonic() - self._told_at >= REPEAT_LOG_SECONDS:
            self._told_at = time.monotonic()
            error = sys.exc_info()[1]
            sys.stderr.write(f"recond: cannot write the JSON log {self.baseFilename} ({error}); "
                             "its records still reach stderr\n")


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


# Reading the JSON log back (`reconctl logs`): this module owns its format.

FOLLOW_POLL_SECONDS = 0.5  # `reconctl logs -f`: how often the file is looked at for new lines
_RECORD_KEYS = ("timestamp", "level", "event", "logger")


def readable(line: str) -> str:
    """One JSON log line as a terminal shows it: time, level, event, then key=value."""
    try:
        record = json.loads(line)
    except ValueError:
        return line.rstrip("\n")
    if not isinstance(record, dict):
        return line.rstrip("\n")
    when = str(record.get("timestamp", "")).replace("T", " ")[:19]
    fields = " ".join(f"{key}={value}" for key, value in record.items() if key not in _RECORD_KEYS)
    return f"{when} {record.get('level', ''):<7} {record.get('event', '')}  {fields}".rstrip()


def last_lines(path: Path, count: int) -> list[str]:
    """The last ``count`` lines of the log (reading only its end: a log may be many MB)."""
    with path.open("rb") as log_file:
        log_file.seek(0, os.SEEK_END)
        end = log_file.tell()
        block, data = 64 * 1024, b""
        while end > 0 and data.count(b"\n") <= count:
            start = max(0, end - block)
            log_file.seek(start)
            data = log_file.read(end - start) + data
            end = start
    lines = data.decode(errors="replace").splitlines()
    return lines[-count:] if count else []


def follow(path: Path, on_line: Callable[[str], None], stopped: Callable[[], bool]) -> None:
    """Hand each line appended to the log to ``on_line`` until ``stopped()``; a rotation (the
    file replaced or cut shorter) is followed into the new file."""
    log_file = path.open("rb")
    log_file.seek(0, os.SEEK_END)
    pending = b""
    try:
        while not stopped():
            chunk = log_file.read()
            if chunk:
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    on_line(line.decode(errors="replace"))
                continue
            time.sleep(FOLLOW_POLL_SECONDS)
            try:
                rotated = os.stat(path).st_ino != os.fstat(log_file.fileno()).st_ino \
                    or os.stat(path).st_size < log_file.tell()
            except FileNotFoundError:  # between the rename and the new file
                continue
            if rotated:
                log_file.close()
                log_file, pending = path.open("rb"), b""
    finally:
        log_file.close()
