"""Typed errors: each JSON-RPC error code of docs/PROTOCOL.md section 2.1 is a class."""

from typing import Any, Dict, Optional, Type


class StockadeError(Exception):
    """An error answered by the server (``code``, ``message``, ``data``) or met by the client."""

    code: Optional[int] = None

    def __init__(self, message: str, code: Optional[int] = None, data: Any = None):
        super().__init__(message if code is None else f"{message} ({code})")
        self.message = message
        if code is not None:
            self.code = code
        self.data = data


class ConnectionClosed(StockadeError):
    """The connection to the server ended (stdio EOF, WebSocket closed, server exited)."""


class InvalidRequest(StockadeError):
    """-32600: handshake order, duplicate processId, unknown process, invalid or denied
    filesystem access."""

    code = -32600


class AccessDenied(InvalidRequest):
    """-32600 from a filesystem method whose policy refuses the access
    (``fs/write is not permitted for path P``)."""


class MethodNotFound(StockadeError):
    """-32601: the server does not implement the method."""

    code = -32601


class InvalidParams(StockadeError):
    """-32602: params of the wrong shape; the message names the field."""

    code = -32602


class InternalError(StockadeError):
    """-32603: the server failed (spawn failure, OS error of a filesystem call)."""

    code = -32603


class NotFound(StockadeError):
    """-32004: the path does not exist."""

    code = -32004


class SessionAttached(StockadeError):
    """-32010: the session to resume is attached to another connection."""

    code = -32010


class PolicyNotAllowed(StockadeError):
    """-32020: the sandbox policy or a limit is above what the operator allows."""

    code = -32020


class SandboxUnavailable(StockadeError):
    """-32021: this host cannot enforce the policy; the message says what is missing."""

    code = -32021


_BY_CODE: Dict[int, Type[StockadeError]] = {
    cls.code: cls  # type: ignore[misc]
    for cls in (
        InvalidRequest,
        MethodNotFound,
        InvalidParams,
        InternalError,
        NotFound,
        SessionAttached,
        PolicyNotAllowed,
        SandboxUnavailable,
    )
}


def error_from_wire(error: Dict[str, Any], method: str = "") -> StockadeError:
    """The typed exception for a JSON-RPC error object."""
    code = error.get("code")
    message = str(error.get("message", ""))
    data = error.get("data")
    cls = _BY_CODE.get(code, StockadeError) if isinstance(code, int) else StockadeError
    if cls is InvalidRequest and method.startswith("fs/") and " is not permitted for path " in message:
        cls = AccessDenied
    return cls(message, code, data)
