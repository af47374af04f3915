"""Structured log fields an operator can follow: every record the app logs inside an invocation carries the
`event_id`, `promotion_id` and `model` it is about, where they apply.

They are set as attributes of the log record, as `logging`'s `extra` would; the Functions host sends them
to Application Insights as custom dimensions, so one query follows one promotion or one event end to end.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator

FIELDS = ("event_id", "promotion_id", "model")

log = logging.getLogger("promotion")
# Immutable by use: `fields` always sets a new dict, never changes the current one.
_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("promotion_log_context")


class _ContextFields(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get({}).items():
            if not hasattr(record, name):  # a field given in `extra` wins
                setattr(record, name, value)
        return True


if not any(isinstance(existing, _ContextFields) for existing in log.filters):
    log.addFilter(_ContextFields())


@contextlib.contextmanager
def fields(**values: object) -> Iterator[None]:
    """Within the block, every record of the `promotion` logger carries these fields (None values are left out)."""
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown log fields: {', '.join(sorted(unknown))}")
    added = {name: str(value) for name, value in values.items() if value is not None}
    token = _context.set({**_context.get({}), **added})
    try:
        yield
    finally:
        _context.reset(token)
