"""Typed builders for the policy objects of the protocol: ``sandboxPolicy`` (PROTOCOL.md 6.2),
``envPolicy`` (section 5) and ``limits`` (section 7). Each ``to_json()`` gives the exact wire
object (the server refuses unknown keys inside these objects, so a typo in a dict would fail;
here it cannot happen)."""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence


def _paths(paths: Sequence[Any]) -> List[str]:
    out = []
    for p in paths:
        s = str(p)
        if not (s.startswith("/") or s.startswith("file://")):
            raise ValueError(f"path must be absolute or a file:// URI, got {s!r}")
        out.append(s)
    return out


class SandboxPolicy:
    """A ``sandboxPolicy`` object. Build one with the class methods."""

    def __init__(self, wire: Dict[str, Any]):
        self._wire = wire

    def to_json(self) -> Dict[str, Any]:
        return dict(self._wire)

    def __repr__(self) -> str:
        return f"SandboxPolicy({self._wire!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SandboxPolicy) and other._wire == self._wire

    @staticmethod
    def _read_access(readable_roots: Optional[Sequence[Any]], include_platform_defaults: bool):
        if readable_roots is None:
            return {"type": "full-access"}
        return {
            "type": "restricted",
            "readable_roots": _paths(readable_roots),
            "include_platform_defaults": include_platform_defaults,
        }

    @classmethod
    def read_only(
        cls,
        *,
        network_access: bool = False,
        readable_roots: Optional[Sequence[Any]] = None,
        include_platform_defaults: bool = True,
    ) -> "SandboxPolicy":
        """Read (everything, or only ``readable_roots``, the cwd and the platform
        directories), write nothing."""
        return cls(
            {
                "type": "read-only",
                "access": cls._read_access(readable_roots, include_platform_defaults),
                "network_access": network_access,
            }
        )

    @classmethod
    def workspace_write(
        cls,
        writable_roots: Sequence[Any] = (),
        *,
        network_access: bool = False,
        exclude_tmpdir_env_var: bool = False,
        exclude_slash_tmp: bool = False,
        readable_roots: Optional[Sequence[Any]] = None,
        include_platform_defaults: bool = True,
    ) -> "SandboxPolicy":
        """Write the cwd, ``writable_roots``, ``/tmp`` and ``$TMPDIR`` (``.git`` and friends
        stay read-only); read per ``readable_roots`` (default everything)."""
        return cls(
            {
                "type": "workspace-write",
                "writable_roots": _paths(writable_roots),
                "read_only_access": cls._read_access(readable_roots, include_platform_defaults),
                "network_access": network_access,
                "exclude_tmpdir_env_var": exclude_tmpdir_env_var,
                "exclude_slash_tmp": exclude_slash_tmp,
            }
        )

    @classmethod
    def external_sandbox(cls, *, network_access: bool = False) -> "SandboxPolicy":
        """Unrestricted filesystem, hardening on."""
        return cls(
            {
                "type": "external-sandbox",
                "network_access": "enabled" if network_access else "restricted",
            }
        )

    @classmethod
    def danger_full_access(cls) -> "SandboxPolicy":
        """Nothing confined."""
        return cls({"type": "danger-full-access"})


_INHERIT = ("all", "core", "none")


@dataclass
class EnvPolicy:
    """An ``envPolicy``: the child's environment built from the server's (section 5)."""

    inherit: str = "all"
    ignore_default_excludes: bool = False
    exclude: Sequence[str] = ()
    include: Sequence[str] = ()
    set: Dict[str, str] = field(default_factory=dict)
    include_only: Sequence[str] = ()

    def __post_init__(self) -> None:
        if self.inherit not in _INHERIT:
            raise ValueError(f"inherit must be one of {_INHERIT}, got {self.inherit!r}")
        for k, v in self.set.items():
            if not k or "=" in k or "\0" in k or not isinstance(v, str):
                raise ValueError(f"invalid variable {k!r}={v!r}")

    def to_json(self) -> Dict[str, Any]:
        return {
            "inherit": self.inherit,
            "ignoreDefaultExcludes": self.ignore_default_excludes,
            "exclude": list(self.exclude),
            "include": list(self.include),
            "set": dict(self.set),
            "includeOnly": list(self.include_only),
        }


@dataclass
class Limits:
    """``limits`` of ``process/start`` (section 7); ``None`` leaves a limit to the server."""

    wall_time_ms: Optional[int] = None
    cpu_time_ms: Optional[int] = None
    memory_bytes: Optional[int] = None
    max_processes: Optional[int] = None
    max_file_size_bytes: Optional[int] = None
    max_open_files: Optional[int] = None
    max_output_bytes: Optional[int] = None

    _WIRE = {
        "wall_time_ms": "wallTimeMs",
        "cpu_time_ms": "cpuTimeMs",
        "memory_bytes": "memoryBytes",
        "max_processes": "maxProcesses",
        "max_file_size_bytes": "maxFileSizeBytes",
        "max_open_files": "maxOpenFiles",
        "max_output_bytes": "maxOutputBytes",
    }

    def __post_init__(self) -> None:
        for name in self._WIRE:
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 0):
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")

    def to_json(self) -> Dict[str, int]:
        return {w: getattr(self, n) for n, w in self._WIRE.items() if getattr(self, n) is not None}
