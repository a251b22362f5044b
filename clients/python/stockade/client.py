"""The client: a connection to a stockade server over stdio or WebSocket, its processes and
the filesystem methods. asyncio throughout; every call is a coroutine."""

import asyncio
import base64
import itertools
import json
import os
import shutil
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Dict, List, Optional, Sequence, Union

from .errors import ConnectionClosed, StockadeError, error_from_wire
from .policy import EnvPolicy, Limits, SandboxPolicy

# Output chunks come as single lines of base64; the default asyncio line limit (64 KiB) is far
# too small for them.
_LINE_LIMIT = 1 << 30

SIGNALS = ("interrupt", "terminate", "kill", "hangup", "quit", "user1", "user2")


@dataclass
class OutputEvent:
    """A chunk of output: ``stream`` is ``stdout``, ``stderr`` or ``pty``."""

    stream: str
    data: bytes
    seq: int


@dataclass
class ExitEvent:
    """The main process ended (``process/exited``)."""

    exit_code: int
    signal: Optional[str]
    sandbox_denied: bool
    usage: Dict[str, int]
    timed_out: bool
    output_limit_exceeded: bool
    denials: List[Any]
    raw: Dict[str, Any]

    @classmethod
    def from_wire(cls, p: Dict[str, Any]) -> "ExitEvent":
        return cls(
            exit_code=p["exitCode"],
            signal=p.get("signal"),
            sandbox_denied=bool(p.get("sandboxDenied")),
            usage=dict(p.get("usage") or {}),
            timed_out=bool(p.get("timedOut")),
            output_limit_exceeded=bool(p.get("outputLimitExceeded")),
            denials=list(p.get("denials") or []),
            raw=p,
        )


@dataclass
class RunResult:
    """What ``Client.run`` collected."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    signal: Optional[str]
    sandbox_denied: bool
    denials: List[Any]
    usage: Dict[str, int]
    timed_out: bool
    output_limit_exceeded: bool
    sandbox: Dict[str, Any]
    pid: int

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def text(self) -> str:
        """stdout decoded (UTF-8, invalid bytes replaced)."""
        return self.stdout.decode("utf-8", "replace")


class _Transport:
    async def send(self, text: str) -> None:
        raise NotImplementedError

    async def receive(self) -> Optional[str]:
        """The next message, or None at the end."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class _StdioTransport(_Transport):
    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc

    async def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()

    async def receive(self) -> Optional[str]:
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        return line.decode() if line else None

    async def close(self) -> None:
        # stdin EOF ends the session: the server kills its processes and exits.
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()


class _WsTransport(_Transport):
    def __init__(self, ws: Any, server: Optional[asyncio.subprocess.Process]):
        self.ws = ws
        self.server = server

    async def send(self, text: str) -> None:
        await self.ws.send(text)

    async def receive(self) -> Optional[str]:
        try:
            msg = await self.ws.recv()
        except Exception:  # the library's ConnectionClosed, whatever its version
            return None
        return msg.decode() if isinstance(msg, bytes) else msg

    async def close(self) -> None:
        await self.ws.close()
        if self.server is not None:
            self.server.terminate()
            try:
                await asyncio.wait_for(self.server.wait(), 10)
            except asyncio.TimeoutError:
                self.server.kill()
                await self.server.wait()


async def _ws_connect(url: str, token: Optional[str]) -> Any:
    try:
        import websockets
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise StockadeError(
            "the WebSocket transport needs the websockets package: "
            "pip install 'stockade-client[websockets]'"
        ) from e
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        from websockets.asyncio.client import connect  # websockets >= 13
    except ImportError:  # pragma: no cover - older websockets
        return await websockets.connect(url, extra_headers=headers, max_size=None)
    return await connect(url, additional_headers=headers, max_size=None)


def _find_binary(binary: Optional[str]) -> str:
    found = binary or os.environ.get("STOCKADE_BIN") or shutil.which("stockade")
    if not found:
        raise StockadeError("stockade binary not found: pass binary= or set STOCKADE_BIN")
    return found


def _b64(data: Union[bytes, str]) -> str:
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


class Process:
    """A process started with ``Client.start``. Iterate it (``async for event in proc``) for
    ``OutputEvent``s and the ``ExitEvent``, until ``process/closed``; or ``await proc.wait()``.
    Output is also collected in ``stdout``, ``stderr`` and ``pty``."""

    def __init__(self, client: "Client", process_id: str):
        self.client = client
        self.id = process_id
        self.pid: Optional[int] = None
        self.sandbox: Dict[str, Any] = {}
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.pty = bytearray()
        self.exit: Optional[ExitEvent] = None
        self._events: "asyncio.Queue[Any]" = asyncio.Queue()
        self._closed = asyncio.get_running_loop().create_future()

    def _notify(self, method: str, p: Dict[str, Any]) -> None:
        if method == "process/output":
            ev = OutputEvent(p["stream"], base64.b64decode(p["chunk"]), p["seq"])
            getattr(self, ev.stream, self.stdout).extend(ev.data)
            self._events.put_nowait(ev)
        elif method == "process/exited":
            self.exit = ExitEvent.from_wire(p)
            self._events.put_nowait(self.exit)
        elif method == "process/closed":
            self._events.put_nowait(None)
            if not self._closed.done():
                self._closed.set_result(None)

    def _lost(self, error: StockadeError) -> None:
        self._events.put_nowait(error)
        if not self._closed.done():
            self._closed.set_exception(error)
            self._closed.exception()  # mark retrieved: wait() may never be called

    def __aiter__(self) -> AsyncIterator[Union[OutputEvent, ExitEvent]]:
        return self.events()

    async def events(self) -> AsyncIterator[Union[OutputEvent, ExitEvent]]:
        """Output and exit events in order, ending when the process is closed."""
        while True:
            ev = await self._events.get()
            if ev is None:
                return
            if isinstance(ev, StockadeError):
                raise ev
            yield ev

    async def wait(self) -> ExitEvent:
        """Waits until the process is closed (exited and its output drained)."""
        await self._closed
        assert self.exit is not None
        return self.exit

    async def write(self, data: Union[bytes, str]) -> str:
        """Writes to stdin (needs ``pipe_stdin=True`` or ``tty=True``); returns the status
        (``accepted``, ``stdinClosed``, ...)."""
        r = await self.client.call("process/write", {"processId": self.id, "chunk": _b64(data)})
        return r["status"]

    async def close_stdin(self) -> str:
        """Closes stdin: the child reads end of file."""
        r = await self.client.call("process/closeStdin", {"processId": self.id})
        return r["status"]

    async def signal(self, name: str) -> bool:
        """Sends a signal (``interrupt``, ``terminate``, ``kill``, ``hangup``, ``quit``,
        ``user1``, ``user2``) to the process group; returns whether it was delivered."""
        if name not in SIGNALS:
            raise ValueError(f"signal must be one of {SIGNALS}, got {name!r}")
        r = await self.client.call("process/signal", {"processId": self.id, "signal": name})
        return bool(r["delivered"])

    async def kill(self) -> bool:
        """Kills the whole process tree (``process/terminate``); returns whether the main
        process was still running."""
        r = await self.client.call("process/terminate", {"processId": self.id})
        return bool(r["running"])

    async def resize(self, rows: int, cols: int) -> None:
        """Resizes the terminal of a tty process."""
        await self.client.call("process/resize", {"processId": self.id, "rows": rows, "cols": cols})


PolicyArg = Optional[Union[SandboxPolicy, Dict[str, Any]]]


def _policy_json(p: Any) -> Any:
    return p.to_json() if hasattr(p, "to_json") else p


class Client:
    """A connection to a stockade server. Make one with ``Client.spawn`` (starts
    ``stockade serve`` and owns it) or ``Client.connect`` (an existing WebSocket server), and
    close it with ``await client.close()`` or ``async with``."""

    def __init__(self, transport: _Transport):
        self._transport = transport
        self._ids = itertools.count(1)
        self._pending: Dict[int, "asyncio.Future[Any]"] = {}
        self._processes: Dict[str, Process] = {}
        self._names = itertools.count(1)
        self._error: Optional[StockadeError] = None
        self._reader = asyncio.get_running_loop().create_task(self._read())
        self.session_id: Optional[str] = None
        self.environment: Dict[str, Any] = {}
        self.server_info: Dict[str, Any] = {}

    # -- connecting ---------------------------------------------------------------------------

    @classmethod
    async def spawn(
        cls,
        args: Sequence[str] = (),
        *,
        binary: Optional[str] = None,
        transport: str = "stdio",
        client_name: str = "stockade-python",
        env: Optional[Dict[str, str]] = None,
    ) -> "Client":
        """Starts ``stockade serve ARGS`` (``binary``, else ``$STOCKADE_BIN``, else
        ``stockade`` on PATH) and connects over ``stdio`` or ``ws`` (a WebSocket server on a
        free loopback port). The server ends with the client."""
        exe = _find_binary(binary)
        if transport == "stdio":
            proc = await asyncio.create_subprocess_exec(
                exe, "serve", *args,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                env=env, limit=_LINE_LIMIT,
            )
            client = cls(_StdioTransport(proc))
        elif transport == "ws":
            proc = await asyncio.create_subprocess_exec(
                exe, "serve", "--listen", "ws://127.0.0.1:0", *args,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, env=env,
            )
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            url = line.decode().strip()
            if not url.startswith("ws://"):
                proc.kill()
                await proc.wait()
                raise StockadeError(f"stockade serve did not print its URL (got {url!r})")
            client = cls(_WsTransport(await _ws_connect(url, None), proc))
        else:
            raise ValueError(f"transport must be 'stdio' or 'ws', got {transport!r}")
        await client._initialize(client_name)
        return client

    @classmethod
    async def connect(
        cls, url: str, *, token: Optional[str] = None, client_name: str = "stockade-python"
    ) -> "Client":
        """Connects to a running ``stockade serve --listen ws://...`` (``token``: its
        ``--ws-token-file`` / ``--ws-token-env`` value)."""
        client = cls(_WsTransport(await _ws_connect(url, token), None))
        await client._initialize(client_name)
        return client

    async def _initialize(self, client_name: str) -> None:
        r = await self.call("initialize", {"clientName": client_name})
        self.session_id = r["sessionId"]
        self.environment = r.get("environmentInfo", {})
        self.server_info = r.get("stockade", {})
        await self._transport.send(json.dumps({"method": "initialized"}))

    async def close(self) -> None:
        """Ends the session (its processes are killed) and the server if this client started
        it."""
        await self._transport.close()
        self._reader.cancel()
        try:
            await self._reader
        except (asyncio.CancelledError, Exception):
            pass

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- JSON-RPC -----------------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            while True:
                text = await self._transport.receive()
                if text is None:
                    break
                text = text.strip()
                if not text:
                    continue
                msg = json.loads(text)
                method = msg.get("method")
                if method is not None:
                    params = msg.get("params") or {}
                    proc = self._processes.get(params.get("processId", ""))
                    if proc is not None:
                        proc._notify(method, params)
                    continue
                fut = self._pending.pop(msg.get("id"), None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
        finally:
            self._error = ConnectionClosed("the connection to the stockade server ended")
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(self._error)
            self._pending.clear()
            for proc in self._processes.values():
                proc._lost(self._error)

    async def call(self, method: str, params: Any = None) -> Any:
        """Sends a request and returns its result; an error answer raises the typed
        exception for its code (``errors.py``)."""
        if self._error is not None:
            raise self._error
        rid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        await self._transport.send(json.dumps({"id": rid, "method": method, "params": params}))
        msg = await fut
        if "error" in msg:
            raise error_from_wire(msg["error"], method)
        return msg.get("result")

    # -- processes ----------------------------------------------------------------------------

    async def start(
        self,
        argv: Sequence[str],
        *,
        cwd: Union[str, "os.PathLike[str]"],
        env: Optional[Dict[str, str]] = None,
        env_policy: Optional[EnvPolicy] = None,
        sandbox_policy: PolicyArg = None,
        sandbox: Optional[Dict[str, Any]] = None,
        limits: Optional[Limits] = None,
        tty: bool = False,
        pipe_stdin: bool = False,
        size: Optional[Dict[str, int]] = None,
        process_id: Optional[str] = None,
    ) -> Process:
        """Starts a process (``process/start``). Without ``env`` and ``env_policy`` the child
        inherits the server's environment minus the default excludes
        (``EnvPolicy()``)."""
        pid = process_id or f"py-{os.getpid()}-{next(self._names)}"
        params: Dict[str, Any] = {
            "processId": pid,
            "argv": list(argv),
            "cwd": os.fspath(cwd),
            "env": dict(env or {}),
            "tty": tty,
            "pipeStdin": pipe_stdin,
        }
        if env_policy is None and env is None:
            env_policy = EnvPolicy()
        if env_policy is not None:
            params["envPolicy"] = env_policy.to_json()
        if sandbox_policy is not None:
            params["sandboxPolicy"] = _policy_json(sandbox_policy)
        if sandbox is not None:
            params["sandbox"] = sandbox
        if limits is not None:
            params["limits"] = limits.to_json()
        if size is not None:
            params["size"] = size
        # Registered before the request: notifications may be read before the response's
        # waiter runs.
        proc = Process(self, pid)
        self._processes[pid] = proc
        try:
            r = await self.call("process/start", params)
        except BaseException:
            self._processes.pop(pid, None)
            raise
        proc.pid = r.get("pid")
        proc.sandbox = r.get("sandbox") or {}
        return proc

    async def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Union[str, "os.PathLike[str]"],
        stdin: Optional[Union[bytes, str]] = None,
        **kwargs: Any,
    ) -> RunResult:
        """Runs a command to the end and returns its output, exit and usage. ``stdin`` is
        written and then closed; other arguments as for ``start``."""
        proc = await self.start(argv, cwd=cwd, pipe_stdin=stdin is not None, **kwargs)
        try:
            if stdin is not None:
                await proc.write(stdin)
                await proc.close_stdin()
            ex = await proc.wait()
        finally:
            self._processes.pop(proc.id, None)
        return RunResult(
            exit_code=ex.exit_code,
            stdout=bytes(proc.stdout or proc.pty),
            stderr=bytes(proc.stderr),
            signal=ex.signal,
            sandbox_denied=ex.sandbox_denied,
            denials=ex.denials,
            usage=ex.usage,
            timed_out=ex.timed_out,
            output_limit_exceeded=ex.output_limit_exceeded,
            sandbox=proc.sandbox,
            pid=proc.pid or 0,
        )

    # -- filesystem ---------------------------------------------------------------------------

    def _fs(self, params: Dict[str, Any], sandbox_policy: PolicyArg, sandbox_cwd: Any,
            sandbox: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        if sandbox_policy is not None:
            params["sandboxPolicy"] = _policy_json(sandbox_policy)
        if sandbox_cwd is not None:
            params["sandboxCwd"] = os.fspath(sandbox_cwd)
        if sandbox is not None:
            params["sandbox"] = sandbox
        return params

    async def read_file(self, path: Any, *, sandbox_policy: PolicyArg = None,
                        sandbox_cwd: Any = None, sandbox: Optional[Dict[str, Any]] = None) -> bytes:
        """``fs/readFile``: the file's bytes."""
        r = await self.call("fs/readFile", self._fs({"path": os.fspath(path)}, sandbox_policy, sandbox_cwd, sandbox))
        return base64.b64decode(r["dataBase64"])

    async def write_file(self, path: Any, data: Union[bytes, str], *, sandbox_policy: PolicyArg = None,
                         sandbox_cwd: Any = None, sandbox: Optional[Dict[str, Any]] = None) -> None:
        """``fs/writeFile``: creates or replaces the file (its parent must exist)."""
        await self.call("fs/writeFile", self._fs({"path": os.fspath(path), "dataBase64": _b64(data)},
                                                 sandbox_policy, sandbox_cwd, sandbox))

    async def create_directory(self, path: Any, *, recursive: bool = True, sandbox_policy: PolicyArg = None,
                               sandbox_cwd: Any = None, sandbox: Optional[Dict[str, Any]] = None) -> None:
        """``fs/createDirectory``."""
        await self.call("fs/createDirectory", self._fs({"path": os.fspath(path), "recursive": recursive},
                                                       sandbox_policy, sandbox_cwd, sandbox))

    async def get_metadata(self, path: Any, *, sandbox_policy: PolicyArg = None,
                           sandbox_cwd: Any = None, sandbox: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """``fs/getMetadata``: ``isDirectory``, ``isFile``, ``isSymlink``, ``size``,
        ``createdAtMs``, ``modifiedAtMs``."""
        return await self.call("fs/getMetadata", self._fs({"path": os.fspath(path)}, sandbox_policy, sandbox_cwd, sandbox))

    async def read_directory(self, path: Any, *, sandbox_policy: PolicyArg = None,
                             sandbox_cwd: Any = None, sandbox: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
        """``fs/readDirectory``: entries ``{fileName, isDirectory, isFile}`` sorted by name."""
        r = await self.call("fs/readDirectory", self._fs({"path": os.fspath(path)}, sandbox_policy, sandbox_cwd, sandbox))
        return r["entries"]

    async def remove(self, path: Any, *, recursive: bool = True, force: bool = True,
                     sandbox_policy: PolicyArg = None, sandbox_cwd: Any = None,
                     sandbox: Optional[Dict[str, Any]] = None) -> None:
        """``fs/remove``."""
        await self.call("fs/remove", self._fs({"path": os.fspath(path), "recursive": recursive, "force": force},
                                              sandbox_policy, sandbox_cwd, sandbox))

    async def copy(self, source: Any, destination: Any, *, recursive: bool = False,
                   sandbox_policy: PolicyArg = None, sandbox_cwd: Any = None,
                   sandbox: Optional[Dict[str, Any]] = None) -> None:
        """``fs/copy``."""
        await self.call("fs/copy", self._fs({"sourcePath": os.fspath(source), "destinationPath": os.fspath(destination),
                                             "recursive": recursive}, sandbox_policy, sandbox_cwd, sandbox))

    async def canonicalize(self, path: Any, *, sandbox_policy: PolicyArg = None,
                           sandbox_cwd: Any = None, sandbox: Optional[Dict[str, Any]] = None) -> str:
        """``fs/canonicalize``: the path with every symlink resolved."""
        r = await self.call("fs/canonicalize", self._fs({"path": os.fspath(path)}, sandbox_policy, sandbox_cwd, sandbox))
        return r["path"]
