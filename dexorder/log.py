"""Structured logging (structlog) shared by every part: one JSON-ish line per event."""

from __future__ import annotations

import logging
import sys

import structlog


def setup_logging(part: str, level: str = "info") -> structlog.stdlib.BoundLogger:
    """Configure structlog for a process and return a logger bound to ``part``."""
    logging.basicConfig(stream=sys.stderr, level=level.upper(), format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    log: structlog.stdlib.BoundLogger = structlog.get_logger(part=part)
    return log
