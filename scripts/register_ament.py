"""Lay out the editable pip install in a prefix (.venv) the way a colcon install lays it out.

pip's editable install installs no data_files and puts console scripts in bin/, so nothing finds the
package through the ament index. This adds, as symlinks into the source tree (what colcon's
--symlink-install does): share/ament_index/resource_index/packages/lightvla_ros, share/lightvla_ros/
(package.xml, launch/, config/, checkpoints/: setup.py's data_files) and lib/lightvla_ros/<script>
for every console script (setup.py's CONSOLE_SCRIPTS, pointing at bin/<script>). Stale links it made
before are removed. With AMENT_PREFIX_PATH=<prefix>, ament_index_python and a full ROS 2 install's
`ros2 run` / `ros2 launch` find the package there.

    .venv/bin/python scripts/register_ament.py [PREFIX]     # default: this interpreter's prefix
"""
from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup_arguments() -> dict:
    """What setup.py passes to setuptools.setup(), without building anything."""
    import setuptools

    captured: dict = {}
    real, cwd = setuptools.setup, Path.cwd()
    setuptools.setup = lambda **kw: captured.update(kw)
    try:
        os.chdir(ROOT)                      # data_files globs are relative to the package root
        namespace = runpy.run_path(str(ROOT / "setup.py"))
    finally:
        setuptools.setup = real
        os.chdir(cwd)
    captured["console_script_entries"] = list(namespace["CONSOLE_SCRIPTS"])   # (name, module:function)
    captured["console_scripts"] = [name for name, _ in namespace["CONSOLE_SCRIPTS"]]
    return captured


def wanted_links(prefix: Path) -> dict[Path, Path]:
    """link path -> target for everything a colcon install of the package would have."""
    args = setup_arguments()
    links: dict[Path, Path] = {}
    for dest, files in args["data_files"]:
        for f in files:
            links[prefix / dest / Path(f).name] = ROOT / f
    for name in args["console_scripts"]:
        links[prefix / "lib" / args["name"] / name] = prefix / "bin" / name
    return links


def register(prefix: Path) -> list[str]:
    """Create or fix the links; remove our links that are no longer wanted. Returns what changed."""
    links = wanted_links(prefix)
    changed = []
    for link, target in links.items():
        if link.is_symlink() and Path(os.readlink(link)) == target:
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
        changed.append(str(link.relative_to(prefix)))
    name = setup_arguments()["name"]
    for top in (prefix / "share" / name, prefix / "lib" / name):
        for path in sorted(top.rglob("*")) if top.is_dir() else []:
            points_into_us = path.is_symlink() and (str(os.readlink(path)).startswith(str(ROOT))
                                                     or str(os.readlink(path)).startswith(str(prefix / "bin")))
            if points_into_us and path not in links:
                path.unlink()
                changed.append(f"removed {path.relative_to(prefix)}")
    return changed


def main(argv: list[str]) -> int:
    prefix = Path(argv[0] if argv else sys.prefix).resolve()
    changed = register(prefix)
    if changed:
        print(f"[install] ament index entries in {prefix}: {len(changed)} updated")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
