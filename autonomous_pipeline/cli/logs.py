"""Logging of the worker and the starter: one stderr handler that masks secret values."""

from __future__ import annotations

import logging

from autonomous_pipeline.backends.secrets import redactor


class RedactingFilter(logging.Filter):
    """Masks secret values in a record's message, arguments included."""

    def filter(self, record: logging.LogRecord) -> bool:
        mask = redactor()
        if mask:
            record.msg = mask(record.getMessage())
            record.args = None
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = mask(record.exc_text)
            record.exc_info = None
        return True


def configure_logging(level: int = logging.WARNING) -> None:
    """One stderr handler for the process, which masks secrets in whatever is logged."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
