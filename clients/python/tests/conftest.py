"""The tests drive the real stockade binary: ``$STOCKADE_BIN``, else the release build of
this checkout. A missing binary fails the tests (it is never a skip)."""

import os
import pathlib
import tempfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def binary() -> str:
    path = os.environ.get("STOCKADE_BIN") or str(REPO / "target" / "release" / "stockade")
    assert os.access(path, os.X_OK), f"no stockade binary at {path}: run cargo build --release"
    return path


@pytest.fixture(params=["stdio", "ws"])
def transport(request) -> str:
    return request.param


@pytest.fixture
def workspace():
    """A scratch workspace (not /tmp itself: a realistic project directory)."""
    with tempfile.TemporaryDirectory(prefix="stockade-py-") as d:
        ws = pathlib.Path(d).resolve() / "ws"
        ws.mkdir()
        yield ws
