"""The in-tree build backend's metadata matches pyproject.toml."""

import importlib.util
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("build_backend", ROOT / "build_backend.py")
build_backend = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_backend)


def test_backend_metadata_matches_pyproject():
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^name = "%s"$' % re.escape(build_backend.NAME), text, re.M)
    assert re.search(r'^version = "%s"$' % re.escape(build_backend.VERSION), text, re.M)
    assert 'websockets = ["websockets>=12"]' in text
    assert build_backend.EXTRAS == {"websockets": ["websockets>=12"]}
    import stockade

    assert stockade.__version__ == build_backend.VERSION
