"""Where the hardware data files (meter register maps, board profiles) live.

They are data, not code: an installer can add a meter model or a board by dropping a TOML file into one of these
directories, without touching Python.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


class HwFileError(Exception):
    pass


def hw_dirs() -> list[Path]:
    """Directories that may hold meters/ and boards/, highest priority first."""
    dirs: list[Path] = []
    if env := os.environ.get("EVSED_HW_DIR"):
        dirs.append(Path(env))
    dirs += [Path("/etc/evsed/hw"), Path(sys.prefix) / "share" / "evsed" / "hw", Path("/usr/share/evsed/hw")]
    # A source checkout (editable install, or running from the repo).
    dirs.append(Path(__file__).resolve().parents[3] / "hw")
    seen: set[Path] = set()
    out = []
    for d in dirs:
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def known_names(kind: str, exclude: tuple[str, ...] = ()) -> list[str]:
    names: set[str] = set()
    for d in hw_dirs():
        sub = d / kind
        if sub.is_dir():
            names.update(p.stem.lower() for p in sub.glob("*.toml"))
    return sorted(names - set(exclude))


def find_hw_file(kind: str, name: str, exclude: tuple[str, ...] = ()) -> Path:
    """A model/board name (file stem, case-insensitive) or a path to a .toml file."""
    if name.endswith(".toml") or os.sep in name:
        path = Path(name)
        if not path.is_file():
            raise HwFileError(f"{kind[:-1]} file {name} does not exist")
        return path
    wanted = name.lower()
    for d in hw_dirs() if wanted not in exclude else []:
        sub = d / kind
        if not sub.is_dir():
            continue
        for p in sorted(sub.glob("*.toml")):
            if p.stem.lower() == wanted:
                return p
    known = ", ".join(known_names(kind, exclude)) or "none installed"
    raise HwFileError(f"no {kind[:-1]} named {name!r} (known: {known})")
