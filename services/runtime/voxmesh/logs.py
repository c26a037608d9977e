"""Logging setup: plain or JSON lines, with secrets scrubbed from every record."""

from __future__ import annotations

import json
import logging
import re
import sys
import time

# Values that look like credentials are replaced before a record is written. Providers never log
# keys on purpose; this is the safety net for exceptions that echo request headers or URLs.
_SECRET_PATTERNS = [
    re.compile(r"(?i)(api[_-]?key|token|secret|password|authorization)(\"?\s*[:=]\s*\"?)([^\s\"',}]+)"),
    re.compile(r"(?i)(bearer\s+)([A-Za-z0-9._\-]+)"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"),
]


def scrub(text: str) -> str:
    """Replaces credential-looking substrings with ``[REDACTED]``."""
    text = _SECRET_PATTERNS[0].sub(lambda m: f"{m.group(1)}{m.group(2)}[REDACTED]", text)
    text = _SECRET_PATTERNS[1].sub(lambda m: f"{m.group(1)}[REDACTED]", text)
    return _SECRET_PATTERNS[2].sub("[REDACTED]", text)


class _ScrubbingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return scrub(json.dumps(payload))


def setup_logging(component: str, level: str = "INFO", fmt: str = "text") -> logging.Logger:
    """Configures the root logger for a process and returns the component's logger.

    Args:
        component: Short process name shown in every line, e.g. ``"stt"``.
        level: Log level name.
        fmt: ``"text"`` or ``"json"``.
    """
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        formatter = _ScrubbingFormatter(
            f"%(asctime)s.%(msecs)03d {component:<8} %(levelname)-7s %(message)s", "%H:%M:%S"
        )
        formatter.converter = time.localtime
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party libraries are chatty at INFO; their warnings still show.
    for noisy in ("aioice", "aiortc", "nats", "asyncio", "httpx", "faster_whisper", "piper"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return logging.getLogger(f"voxmesh.{component}")
