"""Python client for stockade, the Linux exec supervisor.

    import asyncio
    from stockade import Client, SandboxPolicy

    async def main():
        async with await Client.spawn() as c:
            r = await c.run(["echo", "hi"], cwd="/tmp",
                            sandbox_policy=SandboxPolicy.workspace_write())
            print(r.exit_code, r.text)

    asyncio.run(main())
"""

from .client import SIGNALS, Client, ExitEvent, OutputEvent, Process, RunResult
from .errors import (
    AccessDenied,
    ConnectionClosed,
    InternalError,
    InvalidParams,
    InvalidRequest,
    MethodNotFound,
    NotFound,
    PolicyNotAllowed,
    SandboxUnavailable,
    SessionAttached,
    StockadeError,
)
from .policy import EnvPolicy, Limits, SandboxPolicy

__version__ = "0.1.0"

__all__ = [
    "AccessDenied",
    "Client",
    "ConnectionClosed",
    "EnvPolicy",
    "ExitEvent",
    "InternalError",
    "InvalidParams",
    "InvalidRequest",
    "Limits",
    "MethodNotFound",
    "NotFound",
    "OutputEvent",
    "PolicyNotAllowed",
    "Process",
    "RunResult",
    "SIGNALS",
    "SandboxPolicy",
    "SandboxUnavailable",
    "SessionAttached",
    "StockadeError",
]
