"""The install is real: rclpy initialises, lightvla_interfaces is built from the current msg/ and srv/,
imports with no sourcing, and its types survive rclpy serialization."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MSGS = ["ActionChunk", "PruningStats", "EpisodeResult"]
SRVS = ["RunEpisode", "SetInstruction"]


def test_rclpy_initialises(ros_dom):
    import rclpy  # noqa: F401  (the import itself is the check)

    with ros_dom.rclpy_node("install_check") as probe:
        assert probe.node.context.ok()
        assert probe.node.get_name() == "install_check"
        assert probe.node.context.get_domain_id() == ros_dom.domain_id
        context = probe.node.context
    assert not context.ok()  # shut down on exit


def test_import_without_sourcing():
    env = {k: v for k, v in os.environ.items()
           if k not in ("AMENT_PREFIX_PATH", "LD_LIBRARY_PATH", "PYTHONPATH", "CMAKE_PREFIX_PATH",
                        "_ROS_WHEELS_BOOTSTRAP_COMPLETE")}  # as a fresh shell: the .pth re-execs
    code = ("import rclpy; from lightvla_interfaces.msg import ActionChunk, PruningStats, EpisodeResult; "
            "from lightvla_interfaces.srv import RunEpisode, SetInstruction; print(ActionChunk.__module__)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "lightvla_interfaces.msg._action_chunk"


def _fields(path: Path) -> list[str]:
    """Field names of a .msg (or one half of a .srv), constants and comments skipped."""
    names = []
    for line in path.read_text().splitlines() if isinstance(path, Path) else path:
        line = line.split("#", 1)[0].strip()
        if not line or "=" in line:
            continue
        names.append(line.split()[1])
    return names


@pytest.mark.parametrize("name", MSGS)
def test_generated_message_matches_source(name):
    import importlib

    cls = getattr(importlib.import_module("lightvla_interfaces.msg"), name)
    assert list(cls.get_fields_and_field_types()) == _fields(ROOT / "msg" / f"{name}.msg"), (
        f"lightvla_interfaces.msg.{name} is stale: run `bash scripts/build_interfaces.sh`")


@pytest.mark.parametrize("name", SRVS)
def test_generated_service_matches_source(name):
    import importlib

    cls = getattr(importlib.import_module("lightvla_interfaces.srv"), name)
    request, response = (ROOT / "srv" / f"{name}.srv").read_text().split("---")
    assert list(cls.Request.get_fields_and_field_types()) == _fields(request.splitlines())
    assert list(cls.Response.get_fields_and_field_types()) == _fields(response.splitlines())


def test_installed_definitions_are_the_repo_sources():
    from ament_index_python.packages import get_package_share_directory

    os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    share = Path(get_package_share_directory("lightvla_interfaces"))
    for kind, names in (("msg", MSGS), ("srv", SRVS)):
        for name in names:
            installed = (share / kind / f"{name}.{kind}").read_text()
            assert installed == (ROOT / kind / f"{name}.{kind}").read_text(), (
                f"{kind}/{name}.{kind} changed since the last build: run `bash scripts/build_interfaces.sh`")


def _filled():
    from lightvla_interfaces.msg import ActionChunk, EpisodeResult, PruningStats
    from lightvla_interfaces.srv import RunEpisode, SetInstruction

    chunk = ActionChunk(chunk_size=2, action_dim=3, actions=[0.1, -0.2, 0.3, 1.0, 2.0, -1.0],
                        action_space="joint_position", inference_latency=0.125,
                        visual_tokens_kept=77, visual_tokens_total=512)
    chunk.header.stamp.sec, chunk.header.stamp.nanosec, chunk.header.frame_id = 5, 250, "base"
    stats = PruningStats(kept_per_image=[40, 37], total_per_image=[256, 256], kept_total=77, total=512,
                         pruner_time=0.001953125, model_time=0.125)  # float32-exact
    result = EpisodeResult(suite="libero_object", task_name="pick_up_the_soup", init_state_index=3,
                           success=True, steps=211, duration=12.5, message="success")
    return [chunk, stats, result,
            RunEpisode.Request(suite="libero_object", task="2", init_state_index=1, max_steps=300),
            RunEpisode.Response(accepted=True, message="done", result=result),
            SetInstruction.Request(instruction="put the bowl on the plate"),
            SetInstruction.Response(success=True, message="ok")]


@pytest.mark.parametrize("index", range(7))
def test_serialization_round_trip(index):
    from rclpy.serialization import deserialize_message, serialize_message

    msg = _filled()[index]
    data = serialize_message(msg)
    assert isinstance(data, bytes) and len(data) > 8
    back = deserialize_message(data, type(msg))
    assert back == msg
    assert back != type(msg)()  # the filled values made it through, not defaults
