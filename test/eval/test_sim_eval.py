"""Sim in the loop: lightvla-sim-eval as a real process, starting the bridge and a policy over DDS."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("lightvla_interfaces")

BIN = Path(sys.executable).parent


def run_eval(tmp_path: Path, *args: str, timeout: float = 300) -> dict:
    report = tmp_path / "report.json"
    cmd = [str(BIN / "lightvla-sim-eval"), *args, "--report", str(report), "--quiet",
           "--log-dir", str(tmp_path / "logs"), "--camera-size", "128", "--render-quality", "fast"]
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: sim-eval stops the nodes it started
        out, err = proc.communicate(timeout=60)
        pytest.fail(f"lightvla-sim-eval took over {timeout} s\n{out[-3000:]}\n{err[-3000:]}")
    proc.stdout, proc.stderr = out, err
    assert report.is_file(), f"no report; rc {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    data = json.loads(report.read_text())
    data["_stdout"] = proc.stdout
    return data


def _no_errors(report: dict) -> None:
    errors = [e.get("error") for e in report["episodes"] if e.get("error")]
    assert not errors, errors


def _same_as_in_process(tmp_path: Path, ros: dict, *args: str) -> None:
    """Issue 11, item 4: the scripted expert in-process (run_episode stepping the expert node's
    ExpertAgent on the state the bridge would publish) applies, step for step, exactly the actions the
    bridge applied over ROS: same success, same steps, the same float64 values."""
    (tmp_path / "in_process").mkdir()
    local = run_eval(tmp_path / "in_process", "--policy", "expert", "--in-process", "--record-actions", *args)
    _no_errors(local)
    for over_ros, here in zip(ros["episodes"], local["episodes"], strict=True):
        assert here["in_process"] and len(over_ros["applied_actions"]) == over_ros["policy_steps"] > 10
        for key in ("success", "policy_steps", "wait_steps", "dropped_steps", "chunks"):
            assert here[key] == over_ros[key], (key, here[key], over_ros[key])
        first = next((i for i, (a, b) in enumerate(zip(here["applied_actions"], over_ros["applied_actions"]))
                      if a != b), None)
        assert first is None, (first, here["applied_actions"][first], over_ros["applied_actions"][first])


def test_expert_lift_over_ros(tmp_path):
    args = ("--suite", "robosuite", "--tasks", "Lift", "--init-states", "0")
    r = run_eval(tmp_path, "--policy", "expert", "--record-actions", *args)
    _no_errors(r)
    ep = r["episodes"][0]
    assert ep["success"], ep
    assert ep["dropped_steps"] == 0 and ep["bad_actions"] == 0
    assert ep["actions_applied"] == ep["policy_steps"] > 10
    assert ep["chunks"] >= ep["policy_steps"] / 8  # the expert's chunks went through the same scheduler
    assert r["overall"]["success_rate"] == 1.0
    assert "overall: 1/1" in r["_stdout"]
    _same_as_in_process(tmp_path, r, *args)


def test_expert_lift_bridge_executes_chunks(tmp_path):
    """action_input chunk: the bridge runs the expert's ActionChunks through policy.chunking itself."""
    r = run_eval(tmp_path, "--policy", "expert", "--suite", "robosuite", "--tasks", "Lift", "--init-states", "1",
                 "--action-input", "chunk")
    _no_errors(r)
    ep = r["episodes"][0]
    assert ep["success"], ep
    assert ep["dropped_steps"] == 0 and ep["actions_applied"] == ep["policy_steps"]


def test_expert_lift_wall_clock(tmp_path):
    """wall_clock: the sim paces itself; the loop runs and the report counts what was dropped."""
    r = run_eval(tmp_path, "--policy", "expert", "--suite", "robosuite", "--tasks", "Lift", "--init-states", "2",
                 "--mode", "wall_clock", "--max-steps", "40")
    _no_errors(r)
    ep = r["episodes"][0]
    assert ep["policy_steps"] == 40 or ep["success"]
    assert ep["actions_applied"] >= 5, ep  # a CPU sim renders slower than real time: some steps drop
    assert ep["actions_applied"] + ep["dropped_steps"] == ep["policy_steps"]


def test_expert_libero_object_over_ros(tmp_path):
    args = ("--suite", "libero_object", "--tasks", "0", "--init-states", "0")
    r = run_eval(tmp_path, "--policy", "expert", "--record-actions", *args)
    _no_errors(r)
    ep = r["episodes"][0]
    assert ep["success"], ep
    assert ep["dropped_steps"] == 0 and ep["wait_steps"] == 10
    assert ep["policy_steps"] < 280
    _same_as_in_process(tmp_path, r, *args)


def test_unknown_checkpoint_name_is_a_clear_error(tmp_path):
    proc = subprocess.run([str(BIN / "lightvla-sim-eval"), "--checkpoint", "no-such-checkpoint", "--suite", "robosuite",
                           "--tasks", "Lift", "--init-states", "0"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "checkpoint 'no-such-checkpoint' not found; looked in" in proc.stderr, proc.stderr


def test_tiny_checkpoint_lock_step_loop(tmp_path, tiny_checkpoint):
    steps = 12
    r = run_eval(tmp_path, "--checkpoint", str(tiny_checkpoint), "--suite", "libero_object", "--tasks", "0",
                 "--init-states", "0", "--max-steps", str(steps), "--device", "cpu", "--action-rows", "lightvla")
    _no_errors(r)
    ep = r["episodes"][0]
    assert ep["policy_steps"] == steps                    # the episode ran to max_steps
    assert ep["observations_published"] >= steps          # observations in
    assert ep["actions_applied"] == steps                 # every step got its action ...
    assert ep["dropped_steps"] == 0 and ep["bad_actions"] == 0  # ... in lock-step (late duplicates are only counted)
    assert ep["chunks"] >= 1 and ep["inference_latencies"]
    assert ep["kept_tokens"] and all(0 < k <= t for k, t in zip(ep["kept_tokens"], ep["total_tokens"]))
    ck = r["checkpoint"]
    assert ck["path"] == str(Path(tiny_checkpoint).resolve()) and len(ck["weights_fingerprint"]) == 16
    assert r["overall"]["step_latency_s"]["count"] == steps
    assert str(Path(tiny_checkpoint).resolve()) in r["_stdout"]  # the summary says which checkpoint ran
    # --action-rows reaches the node (-p action_rows:=lightvla) and the report (the checkpoint records oft)
    assert r["action_rows"] == {"requested": "lightvla", "resolved": "lightvla"}
    assert "action rows: lightvla" in r["_stdout"]
    node_logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "logs").rglob("*") if p.is_file())
    assert "action rows lightvla" in node_logs
