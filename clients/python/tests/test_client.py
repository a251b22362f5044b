"""The Python client against the real binary, over stdio and WebSocket."""

import asyncio
import os

import pytest

from stockade import (
    AccessDenied,
    Client,
    EnvPolicy,
    ExitEvent,
    InvalidParams,
    Limits,
    OutputEvent,
    PolicyNotAllowed,
    SandboxPolicy,
)

ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin"}


def arun(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def test_run_collects_output_exit_and_usage(binary, transport, workspace):
    async def main():
        async with await Client.spawn(binary=binary, transport=transport) as c:
            assert c.session_id
            r = await c.run(
                ["sh", "-c", "echo out; echo err >&2; exit 3"],
                cwd=workspace,
                env=ENV,
                sandbox_policy=SandboxPolicy.workspace_write(),
            )
            assert r.exit_code == 3
            assert r.stdout == b"out\n"
            assert r.stderr == b"err\n"
            assert not r.sandbox_denied
            assert set(r.usage) >= {"wallMs", "userMs", "sysMs", "maxRssKb"}
            assert r.sandbox["policy"] == "workspace-write"
            assert r.sandbox["enforcement"] == "full"
            assert r.pid > 0

    arun(main())


def test_streaming_events_arrive_while_the_process_runs(binary, transport, workspace):
    async def main():
        async with await Client.spawn(binary=binary, transport=transport) as c:
            p = await c.start(
                ["sh", "-c", "echo ready; read line; echo got:$line"],
                cwd=workspace, env=ENV, pipe_stdin=True,
            )
            events = p.events()
            first = await events.__anext__()
            # The process is blocked on stdin: this output came while it ran.
            assert isinstance(first, OutputEvent)
            assert (first.stream, first.data) == ("stdout", b"ready\n")
            assert await p.write(b"hello\n") == "accepted"
            rest = [ev async for ev in events]
            out = b"".join(ev.data for ev in rest if isinstance(ev, OutputEvent))
            assert out == b"got:hello\n"
            assert isinstance(rest[-1], ExitEvent) and rest[-1].exit_code == 0
            seqs = [first.seq] + [ev.seq for ev in rest if isinstance(ev, OutputEvent)]
            assert seqs == sorted(seqs)

    arun(main())


def test_stdin_is_written_and_closed(binary, transport, workspace):
    async def main():
        async with await Client.spawn(binary=binary, transport=transport) as c:
            data = bytes(range(256)) * 1000
            r = await c.run(["cat"], cwd=workspace, env=ENV, stdin=data)
            assert r.exit_code == 0
            assert r.stdout == data
            p = await c.start(["cat"], cwd=workspace, env=ENV, pipe_stdin=True)
            assert await p.close_stdin() == "accepted"
            assert (await p.wait()).exit_code == 0

    arun(main())


def test_kill_and_signal(binary, transport, workspace):
    async def main():
        async with await Client.spawn(binary=binary, transport=transport) as c:
            p = await c.start(["sleep", "1000"], cwd=workspace, env=ENV)
            assert await p.kill() is True
            ex = await p.wait()
            assert (ex.exit_code, ex.signal) == (137, "SIGKILL")
            p = await c.start(["sleep", "1000"], cwd=workspace, env=ENV)
            assert await p.signal("terminate") is True
            ex = await p.wait()
            assert (ex.exit_code, ex.signal) == (143, "SIGTERM")
            with pytest.raises(ValueError):
                await p.signal("stop")

    arun(main())


def test_limits_and_env_policy(binary, transport, workspace):
    async def main():
        async with await Client.spawn(binary=binary, transport=transport) as c:
            r = await c.run(
                ["sleep", "1000"], cwd=workspace, env=ENV, limits=Limits(wall_time_ms=200)
            )
            assert r.timed_out and r.exit_code == 137
            assert r.sandbox["limits"]["wallTimeMs"]["value"] == 200
            r = await c.run(
                ["sh", "-c", "echo $GREETING:${SECRET_TOKEN:-none}"],
                cwd=workspace,
                env_policy=EnvPolicy(inherit="core", set={"GREETING": "hi", "SECRET_TOKEN": "x"},
                                     exclude=["SECRET_*"]),
            )
            # `set` comes after `exclude` (PROTOCOL.md section 5).
            assert r.stdout == b"hi:x\n"

    arun(main())


def test_fs_round_trip(binary, transport, workspace):
    async def main():
        async with await Client.spawn(binary=binary, transport=transport) as c:
            policy = dict(sandbox_policy=SandboxPolicy.workspace_write(), sandbox_cwd=workspace)
            await c.create_directory(workspace / "src" / "deep", **policy)
            await c.write_file(workspace / "src" / "a.txt", b"\x00binary\xff", **policy)
            assert await c.read_file(workspace / "src" / "a.txt", **policy) == b"\x00binary\xff"
            meta = await c.get_metadata(workspace / "src" / "a.txt", **policy)
            assert meta["isFile"] and meta["size"] == 8
            await c.copy(workspace / "src", workspace / "copy", recursive=True, **policy)
            names = [e["fileName"] for e in await c.read_directory(workspace / "copy", **policy)]
            assert names == ["a.txt", "deep"]
            os.symlink("copy/a.txt", workspace / "link")
            assert await c.canonicalize(workspace / "link", **policy) == str(workspace / "copy" / "a.txt")
            await c.remove(workspace / "copy", **policy)
            assert sorted(os.listdir(workspace)) == ["link", "src"]

    arun(main())


def test_refused_writes_are_typed(binary, transport, workspace):
    async def main():
        async with await Client.spawn(binary=binary, transport=transport) as c:
            ro = dict(sandbox_policy=SandboxPolicy.read_only(), sandbox_cwd=workspace)
            with pytest.raises(AccessDenied) as e:
                await c.write_file(workspace / "x.txt", b"no", **ro)
            assert e.value.code == -32600
            assert "fs/write is not permitted" in e.value.message
            assert not (workspace / "x.txt").exists()
            # A process's refused write: the command fails and the sandbox says it refused.
            # (The workspace is under /tmp: without /tmp writable, its parent is outside.)
            outside = workspace.parent / "outside.txt"
            r = await c.run(
                ["sh", "-c", f"echo x > {outside}"], cwd=workspace, env=ENV,
                sandbox_policy=SandboxPolicy.workspace_write(exclude_slash_tmp=True),
            )
            assert r.exit_code != 0 and r.sandbox_denied, r
            assert not outside.exists()
            # Above the server's ceiling (workspace-write by default).
            with pytest.raises(PolicyNotAllowed):
                await c.run(["true"], cwd=workspace, env=ENV,
                            sandbox_policy=SandboxPolicy.danger_full_access())
            with pytest.raises(InvalidParams) as e:
                await c.run([], cwd=workspace, env=ENV)
            assert "argv" in e.value.message

    arun(main())


def test_policy_builders_make_the_wire_objects():
    assert SandboxPolicy.workspace_write(["/cache"], network_access=True).to_json() == {
        "type": "workspace-write", "writable_roots": ["/cache"],
        "read_only_access": {"type": "full-access"}, "network_access": True,
        "exclude_tmpdir_env_var": False, "exclude_slash_tmp": False,
    }
    assert SandboxPolicy.read_only(readable_roots=["/opt"]).to_json()["access"] == {
        "type": "restricted", "readable_roots": ["/opt"], "include_platform_defaults": True,
    }
    assert Limits(wall_time_ms=5, max_output_bytes=10).to_json() == {
        "wallTimeMs": 5, "maxOutputBytes": 10,
    }
    assert EnvPolicy(inherit="none", include_only=["PATH"]).to_json()["includeOnly"] == ["PATH"]
    with pytest.raises(ValueError):
        EnvPolicy(inherit="some")
    with pytest.raises(ValueError):
        Limits(memory_bytes=-1)
    with pytest.raises(ValueError):
        SandboxPolicy.workspace_write(["relative/dir"])
