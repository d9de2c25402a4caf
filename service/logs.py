"""structlog, configured once: JSON via orjson by default, console rendering on a TTY."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if use_console:
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
        factory: Any = structlog.WriteLoggerFactory(file=sys.stderr)
    else:
        processors.append(structlog.processors.JSONRenderer(serializer=orjson.dumps))
        factory = structlog.BytesLoggerFactory(file=sys.stderr.buffer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )


def get_logger(**context: Any) -> Any:
    return structlog.get_logger("driftline").bind(**context)


class _StructlogHandler(logging.Handler):
    """Forwards stdlib records (librdkafka's own log lines) to structlog, so stderr stays one
    JSON object per line."""

    def emit(self, record: logging.LogRecord) -> None:
        level = record.levelname.lower()
        log = get_logger(component="librdkafka")
        method = getattr(log, level if level in _LEVELS else "info")
        method("librdkafka", message=record.getMessage())


def librdkafka_logger() -> logging.Logger:
    """The logger to pass as confluent-kafka's ``logger`` property."""
    logger = logging.getLogger("driftline.librdkafka")
    if not logger.handlers:
        logger.addHandler(_StructlogHandler())
        logger.propagate = False
        logger.setLevel(logging.INFO)
    return logger
