"""End to end: a publisher process + the policy node (tiny checkpoint) + two recorder processes
(mcap, sqlite3), all over DDS; the recorded bags replay offline to exactly what the node published."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from bagtools import JOINTS, PROPRIO_SOURCES, tree_fingerprint
from lightvla_ros.eval.bag_eval import main as bag_eval
from lightvla_ros.eval.bag_io import INPUTS_TOPIC, BagReader
from lightvla_ros.ros.launcher import ros_domain

HERE = Path(__file__).resolve().parent
STEPS = 3
LIMIT = 0.01   # tiny-checkpoint actions reach far beyond this


@pytest.mark.parametrize("clip, cameras_first", [(False, False), (True, False), (False, True)],
                         ids=["no_limits", "limits_that_clip", "cameras_before_proprio"])
def test_recorded_run_replays_to_the_live_actions(tmp_path, tiny_checkpoint, capsys, clip, cameras_first):
    """clip: the node runs with action limits that clip its chunks; it publishes its configuration,
    the recorders store it, and replay applies the same limits (like with like).
    cameras_first: each tick's cameras come before its proprio, so the node pairs them with the
    previous tick's proprio; the replay rebuilds each observation from the inputs the node
    published for its chunk (/lightvla/observation_inputs), not from the order in the bag."""
    assert JOINTS[-2:] == ["finger_l", "finger_r"]
    meta = json.dumps({"proprio_sources": PROPRIO_SOURCES, "suite": "e2e"})
    bags = {s: tmp_path / f"run_{s}" for s in ("mcap", "sqlite3")}
    with ros_domain(log_dir=tmp_path / "logs") as dom:
        policy = dom.start_node("lightvla-policy", name="lightvla_policy", params={
            "checkpoint": str(tiny_checkpoint), "device": "cpu", "dtype": "float32",
            "proprio_sources": PROPRIO_SOURCES, "execution_mode": "open_loop",
            **({"action_min": [-LIMIT], "action_max": [LIMIT]} if clip else {})})
        recorders = {s: dom.start_node("lightvla-record", name=f"rec_{s}", args=[
            "-o", str(bag), "--storage", s, "--task", "e2e", "--checkpoint", str(tiny_checkpoint),
            "--metadata-json", meta]) for s, bag in bags.items()}
        for r in recorders.values():
            r.wait_for_log_line("recording", timeout=60)
        policy.wait_for_log_line("policy ready", timeout=120)
        pub = dom.start_process([sys.executable, str(HERE / "episode_publisher.py"), "--steps", str(STEPS),
                                 "--subscribers", "3", "--out", str(tmp_path / "live.json"),
                                 "--sent-out", str(tmp_path / "sent.json")]
                                + (["--cameras-first"] if cameras_first else []), name="publisher")
        pub.wait_for_log_line(r"published \d+ steps", timeout=180)
        assert pub.wait(timeout=20) == 0
        for r in recorders.values():
            assert r.stop() == 0                       # SIGINT: the bag is closed cleanly
            assert "closed" in r.log_text()
    live = json.loads((tmp_path / "live.json").read_text())
    assert len(live) >= STEPS and {c["step"] for c in live} >= set(range(STEPS))

    for storage, bag in bags.items():
        assert (bag / "metadata.yaml").is_file()
        with BagReader(bag) as r:
            assert r.storage == storage and not r.damage
            assert r.topics["/lightvla/action_chunk"].count == len(live)
            assert r.topics["/camera/wrist/image_raw"].count >= STEPS
            assert r.topics["/lightvla/pruning_stats"].count == len(live)
            meta_in_bag = r.episode_metadata()
            assert meta_in_bag["task"] == "e2e" and meta_in_bag["instruction"] == "pick up the bowl"
            assert meta_in_bag["checkpoint"] == str(tiny_checkpoint)
            assert meta_in_bag["action_max"] == ([LIMIT] if clip else [])   # the node's own configuration
            inputs = [json.loads(r.decode(m).data) for m in r.messages({INPUTS_TOPIC})]
            assert len(inputs) == len(live)                                   # one record per chunk
            older = [d for d in inputs if d["inputs"]["joint:finger_l"] < d["inputs"]["camera:agentview"]]
            if cameras_first:   # the node paired some frames with the previous tick's proprio
                assert older, inputs

    before = {s: tree_fingerprint(b) for s, b in bags.items()}
    report = tmp_path / "report.json"
    code = bag_eval([str(bags["mcap"]), str(bags["sqlite3"]), "--checkpoint", str(tiny_checkpoint),
                     "--report", str(report), "--plots", str(tmp_path / "plots"), "--no-progress"])
    out = capsys.readouterr()
    assert code == 0, out.err
    rep = json.loads(report.read_text())
    live_by_stamp = {c["stamp_ns"]: np.asarray(c["actions"]) for c in live}
    for e in rep["episodes"]:
        assert e["frames"] == len(live) and e["chunks_unmatched"] == 0
        for f in e["frames_detail"]:
            # the replayed prediction equals what the node published live for the same observation
            np.testing.assert_allclose(f["predicted"], live_by_stamp[f["stamp_ns"]], atol=1e-4)
            np.testing.assert_allclose(f["recorded"], live_by_stamp[f["stamp_ns"]], atol=0)
        assert e["actions"]["max_abs_diff"] < 1e-4 and e["actions"]["gripper_agreement"] == 1.0
        assert e["kept_tokens"]["recorded_equal"] == 1.0
        recorded = np.concatenate([np.asarray(f["recorded"]).ravel() for f in e["frames_detail"]])
        if clip:   # the live chunks were clipped, and so were the replayed ones
            assert np.abs(recorded).max() <= LIMIT + 1e-7 and np.isclose(np.abs(recorded), LIMIT).any()
    assert rep["plots"]["actions"]["panels"] == 7
    assert {s: tree_fingerprint(b) for s, b in bags.items()} == before
    if clip or cameras_first:
        return

    # --via-ros: the mcap bag played in real time against a fresh policy node (same checkpoint)
    code = bag_eval([str(bags["mcap"]), "--checkpoint", str(tiny_checkpoint), "--via-ros", "--no-progress",
                     "--report", str(tmp_path / "via_ros.json"), "--record-to", str(tmp_path / "via_ros_bag")])
    out = capsys.readouterr()
    assert code == 0, out.err
    rep = json.loads((tmp_path / "via_ros.json").read_text())
    e = rep["episodes"][0]
    assert rep["mode"] == "via_ros" and e["observations_played"] >= STEPS and e["frames"] >= 1
    for f in e["frames_detail"]:   # same checkpoint, same observation -> the same chunk through the whole ROS path
        if f["recorded"] is not None:
            np.testing.assert_allclose(f["predicted"], f["recorded"], atol=1e-4)
    # Which tick of a step each node answered depends on its timing (a busy node takes the newest
    # frame), but every tick of a step is the same observation: each chunk the replayed node
    # computed equals the chunk the live node computed for that step, whichever ticks they were.
    step_of = {int(s): k for s, k in json.loads((tmp_path / "sent.json").read_text()).items()}
    live_by_step = {c["step"]: np.asarray(c["actions"]) for c in live}
    for f in e["frames_detail"]:
        np.testing.assert_allclose(f["predicted"], live_by_step[step_of[f["stamp_ns"]]], atol=1e-4)
    assert rep["overall"]["ros_latency"]["n"] == e["frames"] and rep["overall"]["ros_latency"]["min"] > 0
    assert "via ROS obs->chunk" in out.out
    with BagReader(tmp_path / "via_ros_bag") as r:
        assert r.topics["/lightvla/action_chunk"].count == e["frames"]
    assert tree_fingerprint(bags["mcap"]) == before["mcap"]

    # defect (c): the bag --record-to wrote holds the bytes as received (not rclpy re-serialised,
    # which rosbags refused for JointState), so it replays offline like any recorded run
    code = bag_eval([str(tmp_path / "via_ros_bag"), "--checkpoint", str(tiny_checkpoint), "--no-progress",
                     "--report", str(tmp_path / "again.json")])
    out = capsys.readouterr()
    assert code == 0, out.err
    again = json.loads((tmp_path / "again.json").read_text())["episodes"][0]
    assert again["frames"] == e["frames"] and again["chunks_unmatched"] == 0 and again["complete"]
    assert again["actions"]["max_abs_diff"] < 1e-4
