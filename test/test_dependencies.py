"""Every import of the package and its launch files is a declared dependency, as `colcon lint`
(colcon-lint) would check it, and no declared key is stale.

colcon-lint itself needs launch / launch_ros (no wheels) and a rosdep database (network), so it
cannot run here; this test applies its rule: a top-level module that is a ROS package (in the
ament index) must be declared under its own name, any other one under its rosdep key.
"""
import ast
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# module -> rosdep key, checked against ros/rosdistro rosdep/python.yaml (commit 8468e88, 2026-08):
# each resolves on Ubuntu Noble (Jazzy, Kilted) and Debian. python3-pytorch-pip is an alias that
# rosdistro is retiring (migrate_eol_2025_04_30); python3-torch is the key colcon-lint looks up.
ROSDEP_KEYS = {
    "numpy": "python3-numpy",
    "cv2": "python3-opencv",
    "yaml": "python3-yaml",
    "matplotlib": "python3-matplotlib",
    "PIL": "python3-pil",
    "tqdm": "python3-tqdm",
    "torch": "python3-torch",
    "transformers": "python3-transformers-pip",
    "timm": "python3-timm-pip",
    "rosbags": "python3-rosbags-pip",
    "mujoco": "python3-mujoco-pip",
}
# modules without any rosdep key (neither python3-<m> nor python3-<m>-pip): pinned in requirements/
PIP_ONLY = {"peft": "peft", "tokenizers": "tokenizers", "safetensors": "safetensors", "mcap": "mcap",
            "robosuite": "robosuite", "libero": "libero"}
# ROS packages with no wheel here (ROS2-PIP.md): imported only by the launch files
NO_WHEEL = {"launch", "launch_ros"}
# optional features, imported only inside the functions that need them (never at module level),
# so the package runs without them: not in package.xml
OPTIONAL = {"ray": "lightvla-sim-eval --ray"}


def imported_modules(module_level_only: bool = False) -> dict[str, set[str]]:
    """Top-level module -> files importing it, for lightvla_ros/ and launch/ (any nesting level, or
    only the file's own top-level statements)."""
    found: dict[str, set[str]] = {}
    files = sorted(ROOT.glob("lightvla_ros/**/*.py")) + sorted(ROOT.glob("launch/*.py"))
    for f in files:
        tree = ast.parse(f.read_text(), str(f))
        nodes = ast.walk(tree) if not module_level_only else [
            n for top in tree.body for n in (list(ast.walk(top)) if isinstance(top, (ast.Try, ast.If)) else [top])]
        for node in nodes:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "lightvla_ros":
                    found.setdefault(top, set()).add(str(f.relative_to(ROOT)))
    return found


def is_ros_package(name: str) -> bool:
    """In the ament index of this venv (the wheels), or a ROS package known to have no wheel."""
    marker = Path(sys.prefix) / "share" / "ament_index" / "resource_index" / "packages" / name
    return name in NO_WHEEL or marker.is_file() or name == "lightvla_interfaces"


@pytest.fixture(scope="module")
def declared() -> dict[str, set[str]]:
    root = ET.parse(ROOT / "package.xml").getroot()
    out: dict[str, set[str]] = {}
    for e in root:
        if e.tag.endswith("depend"):
            out.setdefault(e.tag, set()).add(e.text.strip())
    return out


def test_every_import_is_declared(declared):
    runtime = declared.get("exec_depend", set()) | declared.get("depend", set())
    pinned = (ROOT / "requirements" / "base.txt").read_text() + (ROOT / "requirements" / "nodeps.txt").read_text()
    pinned_names = {line.split("==")[0].strip().lower() for line in pinned.splitlines()
                    if line.strip() and not line.startswith("#")}
    missing, unknown = [], []
    for module, files in sorted(imported_modules().items()):
        if is_ros_package(module):
            if module not in runtime:
                missing.append(f"<exec_depend>{module}</exec_depend> (imported by {sorted(files)[0]})")
        elif module in ROSDEP_KEYS:
            if ROSDEP_KEYS[module] not in runtime:
                missing.append(f"<exec_depend>{ROSDEP_KEYS[module]}</exec_depend> (imported by {sorted(files)[0]})")
        elif module in OPTIONAL:
            assert module not in imported_modules(module_level_only=True), (
                f"{module} ({OPTIONAL[module]}) is optional: import it inside the function that needs it")
        elif module in PIP_ONLY:
            assert PIP_ONLY[module] in pinned_names, f"{module} has no rosdep key: pin it in requirements/"
        else:
            unknown.append(f"{module} ({sorted(files)[0]})")
    assert not missing, "package.xml lacks: " + ", ".join(missing)
    assert not unknown, ("imports with no rosdep key on record here: add them to ROSDEP_KEYS (after checking "
                         "rosdistro) or PIP_ONLY: " + ", ".join(unknown))


def test_no_declared_dependency_is_stale(declared):
    used = set()
    for module in imported_modules():
        if module in OPTIONAL:
            continue
        used.add(module if is_ros_package(module) else ROSDEP_KEYS.get(module, module))
    runtime = declared.get("exec_depend", set()) | declared.get("depend", set())
    assert runtime - used == set(), f"declared but never imported: {sorted(runtime - used)}"
    assert declared.get("test_depend") == {"python3-pytest"}
    assert not any(k.endswith("-pytorch-pip") for k in runtime), "python3-pytorch-pip is retired: python3-torch"
