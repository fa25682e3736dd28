"""Structured logs: one line per event, with a request/operation id, and never a secret.

Code logs events through `log_event(logger, level, "event.name", key=value, ...)`. The
formatter installed by `configure_logging` renders them as `event.name key=value ...` (text) or
one JSON object per line (json). Field names that look like secrets are redacted here, as a
safety net; callers must still never pass keys, tokens or private keys.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

# The id of the request or operation being handled, set by the HTTP middleware and transports.
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "opendps_request_id", default=None
)

_SECRET_MARKERS = ("key", "token", "secret", "password", "signature", "sig", "authorization")
_REDACTED = "***"


def _is_secret_field(name: str) -> bool:
    lowered = name.lower()
    if lowered in ("key_name", "keyname", "skn"):
        return False
    return any(marker in lowered for marker in _SECRET_MARKERS)


def redact(fields: dict[str, Any]) -> dict[str, Any]:
    return {
        name: (_REDACTED if _is_secret_field(name) else value) for name, value in fields.items()
    }


def log_event(
    logger: logging.Logger,
    level: int,
    event: str,
    *,
    exc_info: BaseException | bool | None = None,
    **fields: Any,
) -> None:
    """Log one event with its fields (rendered by the configured formatter).

    `exc_info` attaches a traceback (an exception, or True inside `except`), as in `logging`.
    """
    if logger.isEnabledFor(level):
        logger.log(
            level, event, extra={"opendps_fields": redact(fields)}, exc_info=exc_info, stacklevel=2
        )


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = (
            datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
        )
        parts = [stamp, f"{record.levelname:<7}", record.getMessage()]
        fields: dict[str, Any] = getattr(record, "opendps_fields", {})
        rid = request_id.get()
        if rid is not None:
            parts.append(f"request_id={rid}")
        parts.extend(f"{name}={_text_value(value)}" for name, value in fields.items())
        if record.name and not record.name.startswith("opendps"):
            parts.append(f"logger={record.name}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text_value(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "logger": record.name,
        }
        rid = request_id.get()
        if rid is not None:
            body["request_id"] = rid
        body.update(getattr(record, "opendps_fields", {}))
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """Install the OpenDPS formatter on the root logger (called once by the CLI)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log duplicates our own request events.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # Alembic narrates every start ("Context impl SQLiteImpl."); the store logs its own
    # `store.schema.upgraded` event when a migration actually runs.
    logging.getLogger("alembic").setLevel(logging.WARNING)
