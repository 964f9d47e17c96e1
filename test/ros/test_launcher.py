"""The process launcher: real node processes over DDS on loopback, bounded waits, clean teardown."""
import json
import os
import signal
import sys
import time

import pytest

from lightvla_ros.ros import launcher
from lightvla_ros.ros.launcher import (DOMAIN_IDS, clean_stale_shm, ros_args, ros_domain,
                                       resolve_executable, stale_shm_segments)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes only once reaped; report what /proc says
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_domains_are_unique_valid_and_released(tmp_path):
    with ros_domain(log_dir=tmp_path / "a") as a, ros_domain(log_dir=tmp_path / "b") as b:
        assert a.domain_id != b.domain_id
        assert a.domain_id in DOMAIN_IDS and b.domain_id in DOMAIN_IDS and 0 not in (a.domain_id, b.domain_id)
        assert a.env["ROS_DOMAIN_ID"] == str(a.domain_id)
        assert a.env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
        taken = a.domain_id
    # released: a domain asking for the same slot gets it again
    seed = DOMAIN_IDS.index(taken)
    lock = launcher._DomainLock(seed=seed)
    try:
        assert lock.domain_id == taken
    finally:
        lock.release()


def test_ros_args_formatting(tmp_path):
    params_file = tmp_path / "p.yaml"
    params_file.write_text("/**:\n  ros__parameters:\n    a: 1\n")
    args = ros_args(params={"tag": "1", "flag": True, "rate": 2.5, "cams": ["a", "b"], "nested": {"k": 3}},
                    params_file=params_file, remaps={"chunk": "/out"}, name="n1")
    assert args[:3] == ["--ros-args", "--params-file", str(params_file)]
    assert ["-p", 'tag:="1"'] == args[3:5]          # a numeric-looking string stays a string
    assert "flag:=true" in args and "rate:=2.5" in args and 'cams:=["a", "b"]' in args
    assert "nested.k:=3" in args
    assert args[-4:] == ["-r", "chunk:=/out", "-r", "__node:=n1"]
    assert ros_args() == []
    with pytest.raises(FileNotFoundError, match="params file"):
        ros_args(params_file=tmp_path / "missing.yaml")


def test_missing_console_script_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="lightvla-no-such-node"):
        resolve_executable("lightvla-no-such-node")
    with ros_domain(log_dir=tmp_path) as dom, pytest.raises(FileNotFoundError):
        dom.start_node("lightvla-no-such-node")
    assert resolve_executable("python").startswith(os.path.dirname(sys.executable))


def test_node_gets_params_and_remaps_and_publishes(ros_dom, probe, helper_node, tmp_path):
    from lightvla_interfaces.msg import ActionChunk

    params_file = tmp_path / "talker.yaml"
    params_file.write_text("/**:\n  ros__parameters:\n    chunk_size: 4\n    action_dim: 2\n")
    talker = helper_node("talker", params={"tag": "007", "action_space": "joint_position"},
                         params_file=params_file, remaps={"chunk": "/lightvla/action_chunk"})
    m = talker.wait_for_log_line(r"params chunk_size=(\d+) action_dim=(\d+) action_space=(\S+) "
                                 r"tag='([^']*)' type=(\w+)",
                                 timeout=30)
    assert m.groups() == ("4", "2", "joint_position", "007", "str")
    probe.wait_for_topic("/lightvla/action_chunk", timeout=20)
    (msg,) = probe.collect("/lightvla/action_chunk", ActionChunk, count=1, timeout=20)
    assert (msg.chunk_size, msg.action_dim, msg.header.frame_id) == (4, 2, "007")
    assert list(msg.actions) == [0.5 * i for i in range(8)]
    assert talker.stop() is not None and not talker.group_alive()
    assert "talker stopping on SIGINT" in talker.log_text()  # SIGINT was enough: a clean exit


def test_action_chunk_between_two_processes(ros_dom, helper_node):
    listener = helper_node("listener")
    listener.wait_for_log_line("ready", timeout=30)
    talker = helper_node("talker", params={"chunk_size": 3, "action_dim": 7, "tag": "x"})
    assert listener.wait(timeout=30) == 0, listener.log_tail()
    got = json.loads(listener.wait_for_log_line(r"RECEIVED (.*)", timeout=1).group(1))
    assert got["chunk_size"] == 3 and got["action_dim"] == 7 and got["frame_id"] == "x"
    assert got["actions"] == pytest.approx([0.5 * i for i in range(21)])
    assert (got["kept"], got["total"], got["action_space"]) == (37, 256, "eef_delta_pose_gripper")
    talker.stop()


def test_service_call_across_processes(ros_dom, probe, helper_node):
    from lightvla_interfaces.srv import SetInstruction

    server = helper_node("service", remaps={"set_instruction": "/policy/set_instruction"})
    server.wait_for_log_line("ready", timeout=30)
    client = probe.node.create_client(SetInstruction, "/policy/set_instruction")
    probe.wait_for_service(client, timeout=20)
    future = client.call_async(SetInstruction.Request(instruction="pick up the bowl"))
    assert probe.spin_until(future.done, timeout=10)
    assert future.result().success and future.result().message == "ok"
    server.wait_for_log_line(r"instruction: 'pick up the bowl'", timeout=5)


def test_wait_for_log_line_errors(ros_dom):
    quick = ros_dom.start_process([sys.executable, "-c", "print('hello'); raise SystemExit(4)"], name="quick")
    with pytest.raises(RuntimeError, match=r"exited with code 4 .*\n(.*\n)*hello"):
        quick.wait_for_log_line("never printed", timeout=20)
    assert quick.wait_for_log_line("hel+o", timeout=1).group(0) == "hello"
    slow = ros_dom.start_process([sys.executable, "-c", "import time; time.sleep(30)"], name="slow")
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="slow logged nothing"):
        slow.wait_for_log_line("never", timeout=0.5)
    assert time.monotonic() - t0 < 3
    with pytest.raises(TimeoutError):
        slow.wait(timeout=0.2)



def test_stubborn_process_group_is_killed(ros_dom, helper_node):
    stubborn = helper_node("stubborn")
    m = stubborn.wait_for_log_line(r"ready child=(\d+) pid=(\d+)", timeout=30)
    child, parent = int(m.group(1)), int(m.group(2))
    assert _pid_alive(child) and _pid_alive(parent)
    t0 = time.monotonic()
    rc = stubborn.stop(sigint_wait=0.5, sigterm_wait=0.5, sigkill_wait=2.0)
    took = time.monotonic() - t0
    assert rc == -signal.SIGKILL
    assert 0.9 < took < 4.0  # waited out SIGINT and SIGTERM, bounded
    assert not stubborn.group_alive()
    deadline = time.monotonic() + 2
    while _pid_alive(child) and time.monotonic() < deadline:  # the grandchild is reaped by init
        time.sleep(0.05)
    assert not _pid_alive(child) and not _pid_alive(parent)


def _maps_fastdds_segment(pid: int) -> bool:
    try:
        maps = open(f"/proc/{pid}/maps", "rb").read()
    except OSError:
        return False
    return b"/dev/shm/fastdds_" in maps or b"/dev/shm/fastrtps_" in maps


def test_domain_close_stops_everything_and_cleans_shm(tmp_path):
    import pathlib
    helper = pathlib.Path(__file__).with_name("helper_nodes.py")
    with ros_domain(log_dir=tmp_path) as dom:
        dom.env["PYTHONPATH"] = str(pathlib.Path(__file__).resolve().parents[2])
        talker = dom.start_process([sys.executable, str(helper), "talker"], name="talker")
        victim = dom.start_process([sys.executable, str(helper), "talker"], name="victim")
        talker.wait_for_log_line("ready", timeout=30)
        victim.wait_for_log_line("ready", timeout=30)
        # both participants have their Fast DDS segments mapped (what kill -9 leaves behind)
        deadline = time.monotonic() + 10.0
        while not all(_maps_fastdds_segment(p.pid) for p in (talker, victim)) and time.monotonic() < deadline:
            time.sleep(0.05)
        for proc in (victim, talker):  # kill -9: Fast DDS leaves its /dev/shm segments behind
            proc.popen.kill()
            proc.popen.wait(timeout=5)
        assert stale_shm_segments(since=dom.started_at), "kill -9 should have left Fast DDS segments"
        pids = [talker.pid, victim.pid]
        started = dom.started_at
    assert not any(_pid_alive(p) for p in pids)
    assert stale_shm_segments(since=started) == []
    assert clean_stale_shm(since=started) == []
