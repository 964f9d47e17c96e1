"""The repository as a ROS 2 colcon workspace, built with colcon from pip (colcon-core, colcon-ros)
against the Kilted wheels in this venv: both packages build, without setuptools warnings, into
the layout `ros2 run` / `ros2 launch` expect; the installed package runs from another directory;
--symlink-install links the sources. (~40 s on 2 cores; runs in CI with the rest of the suite.)

launch / launch_ros have no wheels (ROS2-PIP.md), so the launch files run here against small
stand-ins of the launch API that record the nodes they would start; that checks our part (the
checkpoint lookup, the executables and files they name), not launch itself. docs/install.md says
how a full ROS 2 install runs them.
"""
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)
PY = f"python{sys.version_info.major}.{sys.version_info.minor}"

# The launch API as far as our launch files use it; Node records what it would start.
LAUNCH_STUBS = {
    "launch/__init__.py": """
        class LaunchDescription:
            def __init__(self, entities):
                self.entities = list(entities)
        """,
    "launch/actions.py": """
        class DeclareLaunchArgument:
            def __init__(self, name, default_value=None, description=""):
                self.name, self.default_value = name, default_value
        class OpaqueFunction:
            def __init__(self, function):
                self.function = function
        """,
    "launch/substitutions.py": """
        class LaunchConfiguration:
            def __init__(self, name):
                self.name = name
            def perform(self, context):
                return context[self.name]
        """,
    "launch_ros/__init__.py": "",
    "launch_ros/actions.py": """
        STARTED = []
        class Node:
            def __init__(self, **kwargs):
                self.kwargs = kwargs
                STARTED.append(kwargs)
        """,
    "launch_ros/parameter_descriptions.py": """
        class ParameterValue:
            def __init__(self, value, value_type=None):
                self.value, self.value_type = value, value_type
        """,
}

# Run each launch file as `ros2 launch` would (defaults, then the OpaqueFunction), print its nodes.
RUN_LAUNCH = """
import json, runpy, sys
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
overrides = dict(a.split(":=", 1) for a in sys.argv[2:])
ld = runpy.run_path(sys.argv[1])["generate_launch_description"]()
context = {e.name: overrides.get(e.name, e.default_value) for e in ld.entities if isinstance(e, DeclareLaunchArgument)}
nodes = []
for e in ld.entities:
    if isinstance(e, OpaqueFunction):
        nodes += [n.kwargs for n in e.function(context)]
def plain(v):
    if isinstance(v, LaunchConfiguration):
        return context[v.name]
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    if type(v).__name__ == "ParameterValue":
        return plain(v.value)
    return v
print(json.dumps([{"package": n["package"], "executable": n["executable"], "parameters": plain(n["parameters"])}
                  for n in nodes]))
"""


def colcon(ws: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "AMENT_PREFIX_PATH": str(VENV), "CMAKE_PREFIX_PATH": str(VENV), "COLCON_HOME": str(ws / ".colcon")}
    env.pop("COLCON_DEFAULTS_FILE", None)
    return subprocess.run([str(VENV / "bin" / "colcon"), *args], cwd=ws, env=env, capture_output=True,
                          text=True, timeout=timeout)


def in_workspace(ws: Path, command: str, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    """A shell that sourced the install space (local_setup.sh: the venv is the underlay), run elsewhere."""
    env = {k: v for k, v in os.environ.items() if k not in ("AMENT_PREFIX_PATH", "PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env['PATH']}"
    script = f"export AMENT_PREFIX_PATH={VENV}; . {ws / 'install' / 'local_setup.sh'}; {command}"
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    if not (VENV / "bin" / "colcon").is_file():
        pytest.fail("colcon is not installed in this venv: run scripts/install.sh (requirements/base.txt)")
    ws = tmp_path_factory.mktemp("colcon_ws")
    listed = colcon(ws, "list", "--names-only", "--base-paths", str(ROOT), str(ROOT / "lightvla_interfaces"))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["lightvla_interfaces", "lightvla_ros"]
    built = colcon(ws, "build", "--base-paths", str(ROOT), str(ROOT / "lightvla_interfaces"),
                   "--event-handlers", "console_direct+",
                   "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF")
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    return ws, built.stdout + built.stderr


def test_build_has_no_setuptools_warnings(workspace):
    """What a user sees (Python's default warning filters): before, `tests_require` warned twice."""
    _, log = workspace
    noisy = [line for line in log.splitlines() if "Warning" in line or "warning: " in line.lower()
             and "byte-compiling is disabled" not in line]
    assert not noisy, "\n".join(noisy)


def test_install_layout(workspace):
    ws, _ = workspace
    pkg = ws / "install" / "lightvla_ros"
    assert (pkg / "share" / "ament_index" / "resource_index" / "packages" / "lightvla_ros").is_file()
    share = pkg / "share" / "lightvla_ros"
    assert (share / "package.xml").read_text() == (ROOT / "package.xml").read_text()
    launch_files = sorted(p.name for p in ROOT.glob("launch/*.launch.py"))
    assert sorted(p.name for p in (share / "launch").iterdir()) == launch_files
    assert sorted(p.name for p in (share / "config").iterdir()) == sorted(p.name for p in ROOT.glob("config/*.yaml"))
    shipped = sorted(p.name for p in ROOT.glob("checkpoints/*/"))  # every shipped checkpoint, every file
    assert shipped == ["lightvla-libero-object-task0", "lightvla-lift"]
    for name in shipped:
        assert sorted(p.name for p in (share / "checkpoints" / name).iterdir()) == \
            sorted(p.name for p in (ROOT / "checkpoints" / name).iterdir())
    scripts = [ep.name for ep in importlib.metadata.distribution("lightvla_ros").entry_points
               if ep.group == "console_scripts"]
    assert len(scripts) >= 10
    for name in scripts:                   # where `ros2 run lightvla_ros <name>` and launch_ros look
        exe = pkg / "lib" / "lightvla_ros" / name
        assert exe.is_file() and os.access(exe, os.X_OK), f"lib/lightvla_ros/{name} missing"
    iface = ws / "install" / "lightvla_interfaces"
    assert (iface / "share" / "lightvla_interfaces" / "msg" / "ActionChunk.msg").is_file()


def test_installed_package_runs_from_another_directory(workspace, tmp_path):
    ws, _ = workspace
    check = textwrap.dedent(f"""
        import lightvla_ros, lightvla_interfaces.msg
        from ament_index_python.packages import get_package_share_directory
        from lightvla_ros.paths import resolve_checkpoint
        share = get_package_share_directory("lightvla_ros")
        assert share == "{ws}/install/lightvla_ros/share/lightvla_ros", share
        assert lightvla_ros.__file__.startswith("{ws}/install/lightvla_ros/lib/"), lightvla_ros.__file__
        assert lightvla_interfaces.msg.__file__.startswith("{ws}/install/lightvla_interfaces/"), \\
            lightvla_interfaces.msg.__file__
        assert str(resolve_checkpoint("lightvla-lift")) == share + "/checkpoints/lightvla-lift"
        print("ok")
    """)
    r = in_workspace(ws, f"python -c '{check}'", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
    r = in_workspace(ws, f"{ws}/install/lightvla_ros/lib/lightvla_ros/lightvla-bag-eval --help", cwd=tmp_path)
    assert r.returncode == 0 and "--checkpoint" in r.stdout, r.stderr
    # a checkpoint that is nowhere: one clear line naming where it looked, exit 2 (no traceback)
    r = in_workspace(ws, f"{ws}/install/lightvla_ros/lib/lightvla_ros/lightvla-bag-eval {tmp_path} "
                     "--checkpoint no-such-checkpoint --no-progress", cwd=tmp_path)
    assert r.returncode == 2 and "looked in" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("launch_file,args", [("policy.launch.py", []), ("sim.launch.py", []),
                                              ("sim.launch.py", ["policy:=expert"])])
def test_launch_files_name_installed_executables_and_files(workspace, tmp_path, launch_file, args):
    ws, _ = workspace
    stubs = tmp_path / "stubs"
    for rel, text in LAUNCH_STUBS.items():
        (stubs / rel).parent.mkdir(parents=True, exist_ok=True)
        (stubs / rel).write_text(textwrap.dedent(text))
    (tmp_path / "run_launch.py").write_text(RUN_LAUNCH)
    share = ws / "install" / "lightvla_ros" / "share" / "lightvla_ros"
    r = in_workspace(ws, f"PYTHONPATH={stubs}:$PYTHONPATH python {tmp_path / 'run_launch.py'} "
                     f"{share / 'launch' / launch_file} {' '.join(args)}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    nodes = json.loads(r.stdout)
    assert nodes, f"{launch_file} starts no node"
    for node in nodes:
        assert node["package"] == "lightvla_ros"
        assert (ws / "install" / "lightvla_ros" / "lib" / "lightvla_ros" / node["executable"]).is_file()
        for p in node["parameters"]:
            if isinstance(p, str):
                assert Path(p).is_file() and Path(p).parent == share / "config", p   # an installed params file
            elif "checkpoint" in p:   # resolved to the installed shipped checkpoint, not a cwd-relative path
                assert p["checkpoint"] == str(share / "checkpoints" / "lightvla-lift")
    if "policy:=expert" not in args:
        assert any("checkpoint" in p for n in nodes for p in n["parameters"] if isinstance(p, dict))
    # a checkpoint that does not exist stops the launch, naming where it looked
    if "policy:=expert" not in args:
        r = in_workspace(ws, f"PYTHONPATH={stubs}:$PYTHONPATH python {tmp_path / 'run_launch.py'} "
                         f"{share / 'launch' / launch_file} checkpoint:=no-such-checkpoint", cwd=tmp_path)
        assert r.returncode != 0 and "checkpoint 'no-such-checkpoint' not found; looked in" in r.stderr


def test_symlink_install_links_the_sources(tmp_path):
    """colcon build --symlink-install: launch/config link back to the repository, and the Python
    package is a develop install of it, so edits need no rebuild."""
    built = colcon(tmp_path, "build", "--symlink-install", "--base-paths", str(ROOT), "--packages-select",
                   "lightvla_ros")
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    share = tmp_path / "install" / "lightvla_ros" / "share" / "lightvla_ros"
    assert (share / "launch" / "policy.launch.py").resolve() == ROOT / "launch" / "policy.launch.py"
    assert (share / "config" / "policy.yaml").resolve() == ROOT / "config" / "policy.yaml"
    site = tmp_path / "install" / "lightvla_ros" / "lib" / PY / "site-packages"
    links = list(site.glob("*.egg-link")) + list(site.glob("__editable__*")) + list(site.glob("*.pth"))
    assert links, f"no develop install in {site}: {sorted(p.name for p in site.iterdir())}"
    build_pkg = tmp_path / "build" / "lightvla_ros" / "lightvla_ros"
    assert build_pkg.resolve() == ROOT / "lightvla_ros"
    shutil.rmtree(tmp_path / "build", ignore_errors=True)
