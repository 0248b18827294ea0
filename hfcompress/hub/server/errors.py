"""The server's one error type: an HTTP error answered as JSON."""

from __future__ import annotations


class HubHTTPError(Exception):
    """An HTTP error answered as JSON ``{"error": message}`` with optional ``X-Error-Code``."""

    def __init__(self, status: int, message: str, code: str | None = None, extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra or {}

