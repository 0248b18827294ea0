"""The server's one error type: an HTTP error answered as one-line JSON.

The request-parsing helpers of :mod:`.protocol` raise it with a 4xx status (400 / 411 / 413 /
416 ...); the handler answers it and logs one line. Anything else escaping a route is a bug:
500, with a traceback in the log.
"""

from __future__ import annotations


class HubHTTPError(Exception):
    """An HTTP error answered as JSON ``{"error": message}`` with optional ``X-Error-Code``."""

    def __init__(self, status: int, message: str, code: str | None = None, extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra or {}

