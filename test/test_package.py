"""The ROS 2 package metadata agrees with itself: package.xml, setup.py, setup.cfg, launch/, config/,
the installed console scripts and the interface package."""
import ast
import configparser
import importlib
import importlib.metadata
import runpy
import xml.etree.ElementTree as ET
from glob import glob
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# package.xml dependencies that no wheel provides here (ROS2-PIP.md): launch needs a full ROS 2 install.
NOT_AS_WHEELS = {"launch", "launch_ros"}


@pytest.fixture(scope="module")
def setup_kwargs():
    """What setup.py passes to setuptools.setup(), captured without building anything (by the
    installer's own scripts/register_ament.py)."""
    script = runpy.run_path(str(ROOT / "scripts" / "register_ament.py"), run_name="register_ament")
    captured = script["setup_arguments"]()
    captured["_CONSOLE_SCRIPTS"] = captured["console_script_entries"]
    return captured


@pytest.fixture(scope="module")
def package_xml():
    return ET.parse(ROOT / "package.xml").getroot()


def test_name_and_version_agree(setup_kwargs, package_xml):
    assert package_xml.get("format") == "3"
    assert package_xml.findtext("name") == setup_kwargs["name"] == "lightvla_ros"
    assert package_xml.findtext("version") == setup_kwargs["version"]
    assert package_xml.find("export/build_type").text == "ament_python"
    assert ROOT.joinpath("resource", setup_kwargs["name"]).is_file()  # the ament index marker
    assert "lightvla_ros" in setup_kwargs["packages"] and "lightvla_ros.ros" in setup_kwargs["packages"]


def test_setup_cfg_installs_scripts_where_ros2_run_looks(setup_kwargs):
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    want = f"$base/lib/{setup_kwargs['name']}"
    assert cfg["develop"]["script_dir"] == want and cfg["install"]["install_scripts"] == want


def test_data_files_exist_and_cover_launch_and_config(setup_kwargs):
    data = dict(setup_kwargs["data_files"])
    name = setup_kwargs["name"]
    assert data["share/ament_index/resource_index/packages"] == [f"resource/{name}"]
    assert "package.xml" in data[f"share/{name}"]
    for dest, files in data.items():
        assert files, f"data_files entry {dest} matches no files"
        for f in files:
            assert (ROOT / f).is_file(), f"data_files lists {f}, which does not exist"
    # every launch file and config file in the repo is installed
    assert sorted(data[f"share/{name}/launch"]) == sorted(glob("launch/*.launch.py", root_dir=ROOT))
    assert sorted(data[f"share/{name}/config"]) == sorted(glob("config/*.yaml", root_dir=ROOT))


def test_console_scripts_point_at_functions(setup_kwargs):
    scripts = setup_kwargs["_CONSOLE_SCRIPTS"]
    declared = setup_kwargs["entry_points"]["console_scripts"]
    assert declared == [f"{n} = {t}" for n, t in scripts]
    assert len({n for n, _ in scripts}) == len(scripts), "duplicate console script names"
    checked = 0
    for name, target in scripts:
        module, func = target.split(":")
        if not (ROOT / (module.replace(".", "/") + ".py")).is_file():
            continue  # written by a later part; checked as soon as the module exists
        mod = importlib.import_module(module)
        assert callable(getattr(mod, func, None)), f"{name}: {module} has no function {func}"
        checked += 1
    assert checked >= 1


def test_installed_console_scripts_match_setup_py(setup_kwargs):
    try:
        dist = importlib.metadata.distribution("lightvla_ros")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("lightvla_ros is not installed in this venv: run scripts/install.sh")
    installed = {(ep.name, ep.value) for ep in dist.entry_points if ep.group == "console_scripts"}
    assert installed == set(setup_kwargs["_CONSOLE_SCRIPTS"]), (
        "the installed entry points are stale: run scripts/install.sh")
    assert dist.version == setup_kwargs["version"]


def test_ros_dependencies_are_importable(package_xml):
    deps = {e.text for e in package_xml.iter() if e.tag in ("depend", "exec_depend")}
    ros_deps = sorted(d for d in deps if not d.startswith("python3-") and d not in NOT_AS_WHEELS)
    assert "rclpy" in ros_deps and "lightvla_interfaces" in ros_deps
    for dep in ros_deps:
        importlib.import_module(dep)  # each ROS dependency is a wheel (or built) in this venv


def test_interface_package_xml():
    root = ET.parse(ROOT / "lightvla_interfaces" / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == "lightvla_interfaces"
    assert root.findtext("member_of_group") == "rosidl_interface_packages"
    assert root.find("export/build_type").text == "ament_cmake"
    deps = {e.text for e in root if e.tag.endswith("depend")}
    assert {"rosidl_default_generators", "rosidl_default_runtime", "std_msgs", "builtin_interfaces"} <= deps
    assert root.findtext("version") == ET.parse(ROOT / "package.xml").getroot().findtext("version")
    cmake = (ROOT / "lightvla_interfaces" / "CMakeLists.txt").read_text()
    for f in sorted(glob("msg/*.msg", root_dir=ROOT) + glob("srv/*.srv", root_dir=ROOT)):
        assert f in cmake, f"{f} is not generated by lightvla_interfaces/CMakeLists.txt"


def _launch_files():
    return sorted((ROOT / "launch").glob("*.py"))


def test_launch_dir_is_not_empty():
    assert _launch_files(), "launch/ holds no launch files"


@pytest.mark.parametrize("path", _launch_files(), ids=lambda p: p.name)
def test_launch_file_is_valid(path, setup_kwargs):
    """Launch files cannot run here (no launch wheels): parse them and check what can be checked."""
    assert path.name.endswith(".launch.py"), f"{path.name}: launch files are named *.launch.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in funcs, f"{path.name} defines no generate_launch_description()"
    assert not funcs["generate_launch_description"].args.args, "generate_launch_description takes no arguments"
    # executables named in Node(...) (literal or assigned to `executable`) are our console scripts
    scripts = {n for n, _ in setup_kwargs["_CONSOLE_SCRIPTS"]}
    executables, packages = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and isinstance(node.value, ast.Constant):
            if node.arg == "executable":
                executables.add(node.value.value)
            elif node.arg == "package":
                packages.add(node.value.value)
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            if any(isinstance(t, ast.Name) and t.id == "executable" for t in node.targets):
                executables.add(node.value.value)
    assert packages <= {"lightvla_ros"}, f"{path.name} launches nodes of {packages - {'lightvla_ros'}}"
    missing = executables - scripts
    assert not missing, f"{path.name} launches {sorted(missing)}, which setup.py does not install"


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_config_is_a_ros_params_file(path):
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict) and data, f"{path.name} is empty"
    for node, section in data.items():
        assert isinstance(section, dict) and isinstance(section.get("ros__parameters"), dict), (
            f"{path.name}: {node} has no ros__parameters mapping")
