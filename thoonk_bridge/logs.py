"""Structured logs (structlog): JSON lines when stdout is not a terminal, readable on a terminal.

Every line carries the context bound to the logger that wrote it: ``route``, ``plugin``,
``sink`` and ``item`` where there is one.

Every field of every line (ours and the libraries', tracebacks included) passes through
:func:`redact_secrets`: URLs lose their user info, query values and fragment
(:func:`thoonk_bridge.redact.redact_url`), so a Redis password or an outside feed's token never
reaches the log, whichever code logged it.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

from thoonk_bridge.redact import redact_data

LogFormat = Literal["auto", "json", "console"]


def redact_secrets(
    _logger: object, _method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """structlog processor: every URL in every field without its secrets (see the module doc)."""
    for key, value in event_dict.items():
        if isinstance(value, str | list | tuple | dict):
            event_dict[key] = redact_data(value)
        elif not isinstance(value, int | float | bool | type(None)) and "://" in str(value):
            event_dict[key] = redact_data(str(value))  # an object (exception, URL) rendered as text
    return event_dict


def configure_logging(level: str = "info", fmt: LogFormat = "auto", stream: TextIO | None = None) -> None:
    """Set up structlog (and the stdlib logging that libraries such as slixmpp use), writing to
    ``stream`` (default: stdout)."""
    out = sys.stdout if stream is None else stream
    numeric = logging.getLevelNamesMapping()[level.upper()]
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        redact_secrets,  # last: also sees the rendered traceback
    ]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    # Libraries log through the stdlib: route them through the same renderer, one level quieter.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer
        ], foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared])
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING))


def get_logger(**bound: object) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger().bind(**bound)
    return logger


def _redact_by_default() -> None:
    """A program that embeds the daemon (or a test harness) without calling configure_logging still
    gets structlog's default output, but with secrets masked: the same processors, redaction added
    just before the renderer."""
    if structlog.is_configured():
        return
    processors = list(structlog.get_config()["processors"])
    processors.insert(max(0, len(processors) - 1), redact_secrets)
    structlog.configure(processors=processors)


_redact_by_default()
