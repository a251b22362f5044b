"""A PEP 517 build backend for this package that uses only the standard library.

pip builds a local directory in an isolated environment and would download setuptools for it;
with this backend (``requires = []``) ``pip install ./clients/python`` needs no network. It
builds a pure-Python wheel of the ``stockade`` package; the metadata comes from the constants
below, which ``tests/test_packaging.py`` compares with ``pyproject.toml``.
"""

import base64
import hashlib
import io
import os
import tarfile
import zipfile

NAME = "stockade-client"
DIST = "stockade_client"
VERSION = "0.1.0"
SUMMARY = "Python client for stockade, the Linux exec supervisor (JSON-RPC over stdio or WebSocket)"
REQUIRES_PYTHON = ">=3.9"
EXTRAS = {"websockets": ["websockets>=12"]}
PACKAGE = "stockade"

HERE = os.path.dirname(os.path.abspath(__file__))


def _metadata():
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {NAME}",
        f"Version: {VERSION}",
        f"Summary: {SUMMARY}",
        f"Requires-Python: {REQUIRES_PYTHON}",
    ]
    for extra, reqs in EXTRAS.items():
        lines.append(f"Provides-Extra: {extra}")
        lines.extend(f'Requires-Dist: {r}; extra == "{extra}"' for r in reqs)
    readme = os.path.join(HERE, "README.md")
    if os.path.exists(readme):
        lines.append("Description-Content-Type: text/markdown")
        with open(readme, encoding="utf-8") as f:
            return "\n".join(lines) + "\n\n" + f.read()
    return "\n".join(lines) + "\n"


def _package_files():
    root = os.path.join(HERE, PACKAGE)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith((".py", ".typed")):
                full = os.path.join(dirpath, name)
                yield full, os.path.relpath(full, HERE).replace(os.sep, "/")


def _record_line(arcname, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def _dist_info_files():
    dist_info = f"{DIST}-{VERSION}.dist-info"
    wheel = "Wheel-Version: 1.0\nGenerator: stockade build_backend\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    return dist_info, {
        f"{dist_info}/METADATA": _metadata().encode(),
        f"{dist_info}/WHEEL": wheel.encode(),
    }


def _write_wheel(wheel_directory, files):
    dist_info, meta = _dist_info_files()
    name = f"{DIST}-{VERSION}-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as z:
        for arcname, data in list(files.items()) + list(meta.items()):
            z.writestr(arcname, data)
            record.append(_record_line(arcname, data))
        record.append(f"{dist_info}/RECORD,,")
        z.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return name


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    files = {}
    for full, arcname in _package_files():
        with open(full, "rb") as f:
            files[arcname] = f.read()
    return _write_wheel(wheel_directory, files)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    # A .pth file that puts this directory on sys.path.
    return _write_wheel(wheel_directory, {f"{DIST}.pth": (HERE + "\n").encode()})


def build_sdist(sdist_directory, config_settings=None):
    base = f"{DIST}-{VERSION}"
    name = f"{base}.tar.gz"
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz") as t:
        for rel in ["pyproject.toml", "build_backend.py", "README.md"]:
            if os.path.exists(os.path.join(HERE, rel)):
                t.add(os.path.join(HERE, rel), f"{base}/{rel}")
        for full, arcname in _package_files():
            t.add(full, f"{base}/{arcname}")
        info = tarfile.TarInfo(f"{base}/PKG-INFO")
        data = _metadata().encode()
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return name
