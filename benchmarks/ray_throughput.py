"""Episodes per hour of `lightvla-sim-eval --ray` with 1 and 2 sim workers, against the throughput
model of docs/ray.md (per-episode sim time, policy round trips, CPU cores).

    MUJOCO_GL=egl .venv/bin/python benchmarks/ray_throughput.py                 # the docs' runs
    MUJOCO_GL=egl .venv/bin/python benchmarks/ray_throughput.py --only lift --workers 1,2

Runs (each on a fresh local Ray cluster; --local adds the same episodes without Ray):
- lift: the shipped checkpoint (checkpoints/lightvla-lift, 128 px cameras) on Lift seeds 0-5,
  full episodes (stop at success or 200 steps);
- lift40 / libero40: the tiny checkpoint, 40 policy steps an episode (a random policy never
  succeeds early, so every episode is as long): Lift at 128 px, 12 episodes; LIBERO-Object task 0
  at 256 px (the protocol's rendering), 8 episodes.
Prints one row per run (with the 1-minute load average before it: the machine may be shared) and
writes the reports to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "data" / "checkpoints" / "lightvla-tiny")
RUNS = {
    # the shipped checkpoint, full episodes (stop at success or 200 steps): lengths vary
    "lift": ["--checkpoint", str(REPO / "checkpoints" / "lightvla-lift"), "--suite", "robosuite", "--tasks", "Lift",
             "--init-states", "0-5", "--camera-size", "128"],
    # fixed-length episodes (a random policy never succeeds early): the model's parts, no tail effects
    "lift40": ["--checkpoint", TINY, "--suite", "robosuite", "--tasks", "Lift", "--init-states", "0-11",
               "--camera-size", "128", "--max-steps", "40"],
    "libero40": ["--checkpoint", TINY, "--suite", "libero_object", "--tasks", "0", "--init-states", "0-7",
                 "--camera-size", "256", "--max-steps", "40"],
}


def per_episode(report: dict) -> dict:
    """Mean per-episode parts of the model: steps, sim time per step, policy round trips."""
    eps = [e for e in report["episodes"] if not e.get("error")]
    n = len(eps)
    steps = sum(e["steps"] for e in eps) / n
    chunks = sum(e["chunks"] for e in eps) / n
    rtt = sum(sum(e["inference_latencies"]) for e in eps) / n          # s of policy waits per episode
    episode = sum(e["wall_s"] - e["setup_s"] for e in eps) / n           # s, environment build excluded
    setup = sum(e["setup_s"] for e in eps) / n
    return {"episodes": n, "steps": steps, "chunks": chunks, "policy_wait_s": rtt, "episode_s": episode,
            "setup_s": setup, "t_step_ms": 1e3 * (episode - rtt) / steps, "rtt_ms": 1e3 * rtt / max(chunks, 1),
            "cpu_s": sum(e["cpu_s"] for e in eps) / n,
            # CPU time the sim worker got while it was not waiting on the policy: < 1 = it waited for a core
            "cpu_share": sum(e["cpu_s"] for e in eps) / (episode + setup - rtt) / n}


def predicted_per_hour(base: dict, episodes: int, workers: int, cores: int, forward_s: float) -> float:
    """docs/ray.md's model for a run of `episodes` on `workers`, from the one-worker run's parts:
    the wall time is the longer of the latency bound (each worker: its share of episodes back to
    back, after building its environment) and the CPU bound (all sim and policy work over the cores)."""
    build = base["setup_s"] * base["episodes"]                    # one environment build in the 1-worker run
    latency = episodes / workers * base["episode_s"] + build
    sim_cpu = base["episode_s"] - base["policy_wait_s"]           # a worker not waiting on the policy steps
    cpu = (episodes * (sim_cpu + base["chunks"] * forward_s) + workers * build) / cores
    return episodes * 3600.0 / max(latency, cpu)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="lift,lift40,libero40")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--local", action="store_true", help="also run the episodes without Ray")
    ap.add_argument("--out", default=str(REPO / "out" / "ray_throughput"))
    args = ap.parse_args(argv)
    from lightvla_ros.eval.ray_eval import run_ray_eval
    from lightvla_ros.eval.sim_eval import build_parser

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    rows = []
    for name in args.only.split(","):
        modes = (["local"] if args.local else []) + [f"ray{w}" for w in args.workers.split(",")]
        base = None
        for mode in modes:
            results = out / f"{name}_{mode}.jsonl"
            results.unlink(missing_ok=True)
            cli = RUNS[name] + ["--quiet", "--results", str(results), "--report", str(out / f"{name}_{mode}.json")]
            workers = 1 if mode == "local" else int(mode[3:])
            if mode != "local":
                cli += ["--ray", "--workers", str(workers)]
            load = os.getloadavg()[0]
            t0 = time.monotonic()
            report = run_ray_eval(build_parser().parse_args(cli), use_ray=mode != "local")
            (out / f"{name}_{mode}.json").write_text(json.dumps(report, indent=1, default=str))
            ep = per_episode(report)
            server = (report["utilisation"]["policy_servers"] or [{}])[0]
            forward = server["busy_s"] / server["batches"] if server.get("batches") else ep["rtt_ms"] / 1e3
            if mode == "ray1":
                base = ep
            t = report["throughput"]
            rows.append({"run": name, "mode": mode, "workers": workers, "load": load,
                         "successes": report["overall"]["successes"],
                         "wall_s": time.monotonic() - t0, "startup_s": t["startup_s"],
                         "per_hour": t["episodes_per_hour"],
                         "per_hour_after_startup": t["episodes_per_hour_after_startup"],
                         **ep, "forward_ms": 1e3 * forward, "batch_sizes": report["policy_batch_sizes"],
                         "predicted_per_hour": predicted_per_hour(base, ep["episodes"], workers, cores, forward)
                         if base else None})
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'run':<9} {'mode':<6} {'load':>4} {'ok':>5} {'wall s':>7} {'start s':>7} {'ep/h':>6} {'ep/h*':>6} "
          f"{'pred':>6} "
          f"{'ep s':>6} {'steps':>6} {'step ms':>7} {'rtt ms':>7} {'fwd ms':>7} {'cpu':>5}  batches")
    for r in rows:
        pred = f"{r['predicted_per_hour']:.0f}" if r["predicted_per_hour"] else "-"
        after = f"{r['per_hour_after_startup']:.0f}" if r["per_hour_after_startup"] else "-"
        print(f"{r['run']:<9} {r['mode']:<6} {r['load']:>4.1f} {r['successes']:>2}/{r['episodes']:<2} "
              f"{r['wall_s']:>7.1f} "
              f"{(r['startup_s'] or 0):>7.1f} {r['per_hour']:>6.0f} {after:>6} {pred:>6} {r['episode_s']:>6.1f} "
              f"{r['steps']:>6.0f} {r['t_step_ms']:>7.1f} {r['rtt_ms']:>7.1f} {r['forward_ms']:>7.1f} "
              f"{r['cpu_share']:>5.2f}  "
              f"{r['batch_sizes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
