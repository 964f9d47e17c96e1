"""lightvla-sim-eval --record: a lightvla-record process per episode (sim bridge + policy node over
DDS, tiny checkpoint, robosuite Lift); the recorded bag replays offline to the chunks published live."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("lightvla_interfaces")

from lightvla_ros.eval.bag_eval import main as bag_eval  # noqa: E402
from lightvla_ros.eval.bag_io import BagReader  # noqa: E402

BIN = Path(sys.executable).parent
STEPS = 16
EXPECTED_TOPICS = {"/camera/agentview/image_raw", "/camera/wrist/image_raw", "/joint_states", "/eef_pose",
                   "/instruction", "/lightvla/action", "/lightvla/action_chunk", "/lightvla/pruning_stats",
                   "/sim/episode_result", "/clock", "/lightvla/episode_metadata"}


def test_sim_eval_records_a_bag_that_replays_to_the_live_chunks(tmp_path, tiny_checkpoint, capsys):
    bags, report = tmp_path / "bags", tmp_path / "report.json"
    (bags / "robosuite_Lift_0").mkdir(parents=True)   # taken: the bag goes to robosuite_Lift_0_1
    cmd = [str(BIN / "lightvla-sim-eval"), "--checkpoint", str(tiny_checkpoint), "--suite", "robosuite",
           "--tasks", "Lift", "--init-states", "0", "--max-steps", str(STEPS), "--device", "cpu",
           "--record", str(bags), "--report", str(report), "--quiet", "--log-dir", str(tmp_path / "logs"),
           "--camera-size", "128", "--render-quality", "fast"]
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert report.is_file(), f"rc {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    rep = json.loads(report.read_text())
    ep = rep["episodes"][0]
    assert not ep.get("error") and not ep.get("bag_error"), ep
    assert ep["policy_steps"] == STEPS and ep["actions_applied"] == STEPS and ep["dropped_steps"] == 0
    bag = Path(ep["bag"])
    assert bag == (bags / "robosuite_Lift_0_1").resolve() and (bag / "metadata.yaml").is_file()
    assert "recorded 1 bag(s)" in proc.stdout

    ckpt = str(Path(tiny_checkpoint).resolve())
    with BagReader(bag) as r:
        assert r.storage == "mcap" and not r.damage
        assert EXPECTED_TOPICS <= set(r.topics), sorted(r.topics)
        counts = {t: r.topics[t].count for t in r.topics}
        meta = r.episode_metadata()
    assert counts["/lightvla/action_chunk"] == ep["chunks"] >= 2            # every live chunk is in the bag
    assert counts["/camera/wrist/image_raw"] >= STEPS and counts["/lightvla/action"] >= STEPS
    assert counts["/sim/episode_result"] == 1 and counts["/instruction"] == 1   # no earlier latched history
    assert meta["success"] is ep["success"] and meta["suite"] == "robosuite" and meta["task"] == "Lift"
    assert meta["init_state_index"] == 0 and meta["policy"] == "vla" and meta["instruction"] == ep["instruction"]
    assert meta["checkpoint"] == ckpt and len(meta["checkpoint_sha256"]) == 64
    assert meta["proprio_sources"] and meta["policy_parameters_from"] == "node"

    out = tmp_path / "replay.json"
    code = bag_eval([str(bag), "--checkpoint", ckpt, "--report", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    replay = json.loads(out.read_text())
    e = replay["episodes"][0]
    assert replay["checkpoint"]["sha256"] == meta["checkpoint_sha256"]
    assert e["replay_config"]["proprio_sources"] == meta["proprio_sources"]
    assert e["frames"] == ep["chunks"] and e["chunks_unmatched"] == 0   # every live chunk was replayed
    # the node waits for same-step proprio (proprio_sync_tolerance), so replay matches the live
    # chunks; the old lock-step race showed up here as ~3.5e-5 on the step-8 chunk
    assert e["actions"]["max_abs_diff"] < 1e-5, e["actions"]
    assert e["kept_tokens"]["recorded_equal"] == 1.0
