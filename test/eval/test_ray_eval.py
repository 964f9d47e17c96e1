"""lightvla-sim-eval --ray: the batched policy, the JSONL results and resume, faults, determinism.

The Ray tests share one local cluster (module fixture, shut down at the end) and skip when ray is
not installed (`pip install .[ray]`; scripts/install.sh installs it). Every wait is bounded.
Episodes are kept short for CI: the scripted expert runs blind (no cameras: it reads privileged
state, and rendering is ~90% of a step), and the checkpoint episodes stop after 16 steps.
"""
import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lightvla_ros.eval.episode_log import EpisodeLog
from lightvla_ros.eval.policy_server import BatchingPolicy
from lightvla_ros.eval.ray_eval import episode_specs, run_ray_eval, wilson_interval
from lightvla_ros.eval.sim_eval import build_parser
from lightvla_ros.eval.sim_worker import EpisodeSpec, episode_seed
from lightvla_ros.policy.types import Observation, PolicyOutput

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed (pip install .[ray])")
BIN = Path(sys.executable).parent
INSTRUCTIONS = ["pick up the alphabet soup and place it in the basket", "lift the red cube",
                "put both the alphabet soup and the tomato sauce in the basket"]


def observation(rng, instruction: str, stamp: int = 0) -> Observation:
    images = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(2)]
    proprio = rng.normal(0, 0.1, 8).astype(np.float32)
    return Observation(images=images, instruction=instruction, proprio=proprio, stamp=stamp)


# ---- no Ray --------------------------------------------------------------------------------

def test_infer_batch_equals_single_inference(tiny_policy):
    """Observations of three simulators (prompts of different lengths) in one forward pass: each
    chunk and each kept-token count as the observation alone gives them (fp32, CPU)."""
    rng = np.random.default_rng(0)
    observations = [observation(rng, text, stamp=i) for i, text in enumerate(INSTRUCTIONS)]
    single = [tiny_policy.infer(obs) for obs in observations]
    batch = tiny_policy.infer_batch(observations)
    assert len({tuple(o.kept_per_image) for o in single}) > 1  # per-sample kept counts differ: padded patches
    for one, many in zip(single, batch):
        assert many.kept_per_image == one.kept_per_image and many.stamp == one.stamp
        np.testing.assert_allclose(many.actions, one.actions, rtol=1e-4, atol=1e-5)
    assert tiny_policy.infer_batch([]) == []


class CountingPolicy:
    """infer_batch records its batch sizes; an observation with instruction 'bad' is invalid."""

    def __init__(self):
        self.sizes = []

    def validate(self, obs):
        if obs.instruction == "bad":
            raise ValueError("bad observation")

    def infer_batch(self, observations):
        self.sizes.append(len(observations))
        return [PolicyOutput(actions=np.full((1, 7), obs.stamp, np.float32), stamp=obs.stamp)
                for obs in observations]


def test_batching_policy_fills_batches_and_flushes_a_lone_request():
    async def scenario():
        policy = CountingPolicy()
        batching = BatchingPolicy(policy, max_batch=4, max_wait_s=0.05)
        outs = await asyncio.wait_for(asyncio.gather(*[
            batching.infer(Observation(images=[], instruction="x", stamp=i)) for i in range(6)]), 10)
        assert [o.stamp for o, _ in outs] == list(range(6))  # each caller gets its own chunk
        assert policy.sizes == [4, 2] and sorted(b for _, b in outs) == [2, 2, 4, 4, 4, 4]
        t0 = time.monotonic()
        out, size = await asyncio.wait_for(batching.infer(Observation(images=[], instruction="x", stamp=9)), 10)
        assert size == 1 and out.stamp == 9 and time.monotonic() - t0 < 5.0  # max_wait, not forever
        with pytest.raises(ValueError, match="bad observation"):  # fails alone, before joining a batch
            await asyncio.wait_for(batching.infer(Observation(images=[], instruction="bad")), 10)
        assert batching.stats()["batch_sizes"] == {"1": 1, "2": 1, "4": 1}

    asyncio.run(scenario())


def test_episode_log_streams_and_resumes(tmp_path):
    path = tmp_path / "results.jsonl"
    header = {"policy": "vla", "checkpoint": {"weights_fingerprint": "abc"}, "settings": {"robosuite": {}}}
    with EpisodeLog.open(path, header) as log:
        log.append({"key": "a", "success": True})
        log.append({"key": "b", "success": False, "error": "worker died twice"})
    with open(path, "a") as f:
        f.write('{"kind": "episode", "key": "c", "succ')  # killed mid-write
    with pytest.raises(SystemExit, match="--resume"):
        EpisodeLog.open(path, header)
    with pytest.raises(SystemExit, match="checkpoint differs"):
        EpisodeLog.open(path, {**header, "checkpoint": {"weights_fingerprint": "other"}}, resume=True)
    with EpisodeLog.open(path, {**header, "created": "later"}, resume=True) as log:
        assert set(log.finished) == {"a"}  # the errored episode runs again, the torn line is gone
        log.append({"key": "b", "success": True})
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [x.get("key") for x in lines] == [None, "a", "b", "b"] and lines[0]["kind"] == "header"


def test_wilson_interval():
    assert wilson_interval(0, 0) == [0.0, 1.0]
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(45, 50)
    assert lo == pytest.approx(0.7864, abs=1e-4) and hi == pytest.approx(0.9565, abs=1e-4)


def test_full_protocol_episode_list():
    args = build_parser().parse_args(["--ray", "--suite", "libero_spatial,libero_object,libero_goal,libero_10",
                                      "--tasks", "all", "--trials-per-task", "50"])
    specs = episode_specs(args)
    assert len(specs) == 4 * 10 * 50 and len({s.key for s in specs}) == len(specs)
    assert specs[0] == EpisodeSpec("libero_spatial", "0", 0, episode_seed(0, "libero_spatial", "0", 0))
    assert specs[-1].suite == "libero_10" and specs[-1].task == "9" and specs[-1].init_state_index == 49
    assert episode_specs(args) == specs  # fixed seeds


def test_ray_stays_optional():
    """The node and sim-eval import without ray (it is imported only once a --ray run starts), and
    the extra is pinned alike in setup.py and requirements/ray.txt (what scripts/install.sh installs)."""
    code = ("import sys; import lightvla_ros.eval.sim_eval as e, lightvla_ros.nodes.policy_node; "
            "e.build_parser().parse_args(['--ray']); print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-2000:]
    root = Path(__file__).resolve().parents[2]
    pin = [x for x in (root / "requirements" / "ray.txt").read_text().splitlines() if x.startswith("ray==")]
    assert len(pin) == 1 and f'"ray": ["{pin[0]}"]' in (root / "setup.py").read_text()
    assert "requirements/ray.txt" in (root / "scripts" / "install.sh").read_text()


# ---- on a local Ray cluster ------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_cluster():
    if not HAVE_RAY:
        pytest.skip("ray is not installed (pip install .[ray])")
    import ray

    os.environ.setdefault("MUJOCO_GL", "egl")  # inherited by the workers
    ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False,
             object_store_memory=256 << 20)
    yield ray
    ray.shutdown()


BOUNDS = ("--episode-timeout", "180", "--startup-timeout", "180")  # nothing waits for the defaults' hour


def eval_args(tmp_path, name: str, *argv: str):
    return build_parser().parse_args([*BOUNDS, *argv, "--quiet", "--results", str(tmp_path / f"{name}.jsonl"),
                                      "--report", str(tmp_path / f"{name}.json")])


def outcomes(report: dict) -> dict:
    """What must not depend on where an episode ran."""
    return {r["key"]: (r["success"], r["policy_steps"], r["chunks"], r["kept_tokens"], r.get("error"))
            for r in report["episodes"]}


EXPERT_SPECS = [EpisodeSpec("libero_object", "0", i, episode_seed(0, "libero_object", "0", i)) for i in range(4)] + \
               [EpisodeSpec("robosuite", "Lift", i, episode_seed(0, "robosuite", "Lift", i)) for i in range(2)]


@needs_ray
def test_expert_outcomes_same_locally_and_on_one_and_two_ray_workers(ray_cluster, tmp_path):
    """Scripted expert, 4 LIBERO-Object and 2 Lift episodes (full length): the same successes and
    step counts without Ray, on one Ray worker and on two."""
    argv = ("--policy", "expert", "--suite", "libero_object,robosuite")
    local = run_ray_eval(eval_args(tmp_path, "local", *argv), use_ray=False, specs=EXPERT_SPECS)
    assert all(r["success"] for r in local["episodes"]), outcomes(local)  # measured 6/6
    for workers in (1, 2):
        ray = run_ray_eval(eval_args(tmp_path, f"ray{workers}", *argv, "--ray", "--workers", str(workers)),
                           specs=EXPERT_SPECS)
        assert outcomes(ray) == outcomes(local), workers
        assert len({r["worker"] for r in ray["episodes"]}) == workers
        assert ray["per_suite"]["libero_object"]["ci95"] == wilson_interval(4, 4)


@needs_ray
def test_checkpoint_outcomes_same_locally_and_batched_on_ray(ray_cluster, tmp_path, tiny_checkpoint):
    """A checkpoint on 2 Lift episodes: the local model (batch 1) and the shared Ray policy server
    (one worker: batches of 1; two workers: batches of 2, the server waiting up to 5 s for the
    second observation) give the same steps and kept tokens per chunk."""
    argv = ("--checkpoint", str(tiny_checkpoint), "--suite", "robosuite", "--tasks", "Lift", "--init-states", "0,1",
            "--camera-size", "128", "--max-steps", "16", "--max-wait-ms", "5000")
    local = run_ray_eval(eval_args(tmp_path, "local", *argv), use_ray=False)
    assert all(r["kept_tokens"] and r["policy_steps"] == 16 for r in local["episodes"])
    for workers in (1, 2):
        ray = run_ray_eval(eval_args(tmp_path, f"ray{workers}", *argv, "--ray", "--workers", str(workers)))
        assert outcomes(ray) == outcomes(local), workers
        sizes = ray["policy_batch_sizes"]
        assert sum(sizes.values()) == sum(r["chunks"] for r in ray["episodes"])  # inferences by their batch's size
        assert set(sizes) == {"1"} if workers == 1 else sizes.get("2", 0) >= 1, sizes
        assert ray["utilisation"]["policy_servers"][0]["requests"] == sum(r["chunks"] for r in ray["episodes"])


@needs_ray
def test_killed_worker_episode_is_retried_on_another_worker(ray_cluster, tmp_path):
    killed = {}

    def on_event(kind, data):
        if kind == "episode_started" and not killed:
            killed.update(worker=data["worker"], pid=data["pid"], scratch=data["scratch_dir"], python=data["python"])
            os.kill(data["pid"], signal.SIGKILL)

    args = eval_args(tmp_path, "kill", "--policy", "expert", "--suite", "robosuite", "--tasks", "Lift",
                     "--init-states", "0-2", "--ray", "--workers", "2", "--episode-timeout", "120")
    report = run_ray_eval(args, on_event=on_event)
    eps = report["episodes"]
    assert [r["success"] for r in eps] == [True] * 3, eps
    assert killed["python"] == sys.executable  # the workers run the project's interpreter (the ROS wheels need it)
    retried = [r for r in eps if r["attempt"] == 2]
    assert len(retried) == 1 and retried[0]["worker"] != killed["worker"]
    assert f"pid {killed['pid']}" in retried[0]["retried_after"]
    death = report["faults"]["worker_deaths"]
    assert len(death) == 1 and death[0]["pid"] == killed["pid"] and death[0]["scratch_removed"]
    assert report["faults"]["retried_episodes"] == [retried[0]["key"]] and not Path(killed["scratch"]).exists()
    lines = [json.loads(x) for x in Path(report["results_jsonl"]).read_text().splitlines()[1:]]
    assert sorted(x["key"] for x in lines) == sorted(r["key"] for r in eps)  # the JSONL has each once


@needs_ray
def test_killed_policy_server_restarts_and_retries_in_flight_requests(ray_cluster, tiny_checkpoint):
    from lightvla_ros.eval.policy_server import start_server

    ray = ray_cluster
    server = start_server(str(tiny_checkpoint), max_batch=1, max_wait_s=0.0, num_cpus=1, max_restarts=2,
                          device="cpu", dtype="float32")
    first = ray.get(server.describe.remote(), timeout=300)
    rng = np.random.default_rng(1)
    observations = [observation(rng, INSTRUCTIONS[i % 3], stamp=i) for i in range(6)]
    expected = ray.get([server.infer.remote(o) for o in observations[:1]], timeout=300)[0][0].actions
    refs = [server.infer.remote(o) for o in observations]  # queued: one forward pass at a time
    os.kill(first["pid"], signal.SIGKILL)
    answers = ray.get(refs, timeout=300)
    assert [out.stamp for out, _, _ in answers] == list(range(6))  # every request answered, none lost
    assert {pid for _, _, pid in answers} - {first["pid"]}  # the in-flight ones by the restarted process
    np.testing.assert_allclose(answers[0][0].actions, expected, rtol=1e-5, atol=1e-6)
    assert ray.get(server.describe.remote(), timeout=60)["pid"] != first["pid"]
    ray.kill(server, no_restart=True)


@needs_ray
def test_cli_starts_a_local_cluster_streams_results_and_resumes(ray_cluster, tmp_path):
    """`lightvla-sim-eval --ray` (no ADDRESS: its own local cluster) writes the report and the JSONL;
    after a crash (a torn line, one episode lost), --resume runs only the missing episode."""
    argv = [*BOUNDS, "--policy", "expert", "--suite", "robosuite", "--tasks", "Lift", "--init-states", "0,1",
            "--results", str(tmp_path / "r.jsonl"), "--report", str(tmp_path / "r.json"), "--quiet"]
    proc = subprocess.run([str(BIN / "lightvla-sim-eval"), *argv, "--ray"], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["overall"]["successes"] == 2 and report["backend"] == "ray"
    assert report["per_suite"]["robosuite"]["ci95"] == wilson_interval(2, 2)
    assert report["throughput"]["episodes_per_hour"] > 0 and "95% CI" in proc.stdout
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert len(lines) == 3
    (tmp_path / "r.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])  # crashed mid-line
    from lightvla_ros.eval.sim_eval import main
    assert main([*argv, "--ray", "--resume"]) == 0  # joins the test's cluster
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["throughput"]["episodes_this_run"] == 1 and report["overall"]["successes"] == 2
