"""Where the package's files are: its share directories, the user's checkpoint directory, and
checkpoints by name, so that no default depends on the current directory.

A checkpoint argument is a directory. An absolute path is taken as it is. A relative one is looked
up, in this order, and the first directory that exists wins:
  1. the current directory (what the user typed, as before);
  2. the user's checkpoint directory: $LIGHTVLA_CHECKPOINT_DIR, else
     $XDG_CACHE_HOME/lightvla_ros/checkpoints, else ~/.cache/lightvla_ros/checkpoints;
  3. the checkpoints shipped with the package: <share>/lightvla_ros/checkpoints for every install
     (colcon install space, the venv), and the source tree's checkpoints/;
  4. the source tree itself (`data/checkpoints/lightvla-tiny`, which scripts/install.sh generates).
Nothing here imports torch or rclpy: launch files and CLIs call it before loading anything.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = "lightvla_ros"
SHIPPED_CHECKPOINT = "lightvla-lift"      # checkpoints/lightvla-lift, installed to share/lightvla_ros/checkpoints


class CheckpointNotFound(FileNotFoundError):
    """No checkpoint directory by that name; the message lists every place that was looked at."""

    def __init__(self, name: str, looked: list[Path]):
        self.name, self.looked = name, looked
        if not name:
            super().__init__("no checkpoint given: pass a checkpoint directory")
            return
        places = "\n  ".join(str(p) for p in looked)
        super().__init__(f"checkpoint {name!r} not found; looked in:\n  {places}\n"
                         f"Pass an absolute path, or put the checkpoint directory under {user_checkpoint_dir()}")


def source_root() -> Path | None:
    """The repository root when running from a source checkout (or an editable install of one)."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "package.xml").is_file() and (root / "setup.py").is_file() else None


def share_dirs() -> list[Path]:
    """share/lightvla_ros of every install prefix that has one: AMENT_PREFIX_PATH, then this Python's."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    out: list[Path] = []
    for prefix in prefixes:
        d = Path(prefix) / "share" / PACKAGE
        if (d / "package.xml").is_file() and d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def share_dir() -> Path:
    """The package's share directory (launch/, config/, checkpoints/, package.xml): the first install
    prefix that has it, else the source tree."""
    dirs = share_dirs()
    if dirs:
        return dirs[0]
    root = source_root()
    if root is None:
        raise FileNotFoundError(f"no share/{PACKAGE} under AMENT_PREFIX_PATH or {sys.prefix}, and no source tree")
    return root


def user_checkpoint_dir() -> Path:
    if os.environ.get("LIGHTVLA_CHECKPOINT_DIR"):
        return Path(os.environ["LIGHTVLA_CHECKPOINT_DIR"]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / PACKAGE / "checkpoints"


def checkpoint_candidates(name: str | os.PathLike) -> list[Path]:
    """Every place `resolve_checkpoint(name)` looks, in order."""
    path = Path(name).expanduser()
    if path.is_absolute():
        return [path]
    places = [Path.cwd() / path, user_checkpoint_dir() / path]
    places += [d / "checkpoints" / path for d in share_dirs()]
    root = source_root()
    if root is not None:
        places += [root / "checkpoints" / path, root / path]
    unique: list[Path] = []
    for p in places:
        if p not in unique:
            unique.append(p)
    return unique


def resolve_checkpoint(name: str | os.PathLike) -> Path:
    """The absolute checkpoint directory `name` means; CheckpointNotFound names where it looked."""
    if not str(name):
        raise CheckpointNotFound("", [])
    places = checkpoint_candidates(name)
    for p in places:
        if p.is_dir():
            return p.resolve()
    raise CheckpointNotFound(str(name), places)
