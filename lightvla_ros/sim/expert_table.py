"""Runs the scripted experts directly on the sim (no ROS) and prints a success table.

    python -m lightvla_ros.sim.expert_table                  # LIBERO-Object tasks 0..9 + Lift seeds 0..4
    python scripts/expert_table.py --chunk-size 8 --camera-size 128

Episodes follow the LIBERO protocol: reset to the init state, `num_wait_steps` no-op steps
(LIBERO only), then the expert until success or `max_steps`. With --chunk-size N each chunk
is executed open loop, as the VLA's chunks are.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass

from lightvla_ros.sim import NOOP_ACTION, SimConfig, SimEnv, make_env
from lightvla_ros.sim.experts import make_expert


@dataclass
class EpisodeStats:
    suite: str
    task: str
    init_state: int
    success: bool
    steps: int           # control steps after the wait steps
    seconds: float       # wall time of the episode (reset included)


def run_expert_episode(env: SimEnv, init_state_index: int = 0, chunk_size: int = 1) -> EpisodeStats:
    t0 = time.perf_counter()
    obs = env.reset(init_state_index)
    for _ in range(env.num_wait_steps):
        obs, _ = env.step(NOOP_ACTION)
    expert = make_expert(env)
    expert.reset()
    steps, success = 0, False
    while steps < env.max_steps and not success:
        for action in expert.act_chunk(obs, chunk_size):
            obs, success = env.step(action)
            steps += 1
            if success or steps >= env.max_steps:
                break
    return EpisodeStats(env.suite, env.task_name, init_state_index, success, steps, time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--libero-tasks", default="0-9", help="LIBERO-Object task indices, e.g. 0-9 or 0,3 ('' = none)")
    p.add_argument("--init-state", type=int, default=0, help="LIBERO init state index")
    p.add_argument("--lift-seeds", default="0-4", help="robosuite Lift seeds ('' = none)")
    p.add_argument("--chunk-size", type=int, default=1, help="actions per expert call, executed open loop")
    p.add_argument("--camera-size", type=int, default=0, help="render cameras at this size (0 = no rendering)")
    p.add_argument("--render-quality", default="fast", choices=["fast", "full"])
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)

    def ints(spec: str) -> list[int]:
        out: list[int] = []
        for part in filter(None, spec.split(",")):
            lo, _, hi = part.partition("-")
            out += list(range(int(lo), int(hi or lo) + 1))
        return out

    cams = dict(use_cameras=args.camera_size > 0, camera_size=max(args.camera_size, 8),
                render_quality=args.render_quality)
    jobs = [SimConfig(suite="libero_object", task=t, **cams) for t in ints(args.libero_tasks)]
    jobs += [SimConfig(suite="robosuite", task="Lift", seed=s, **cams) for s in ints(args.lift_seeds)]
    rows: list[EpisodeStats] = []
    print(f"{'suite':<14} {'task':<56} {'init':>4} {'seed':>4} {'ok':>3} {'steps':>5} {'time_s':>7}")
    for cfg in jobs:
        with make_env(cfg) as env:
            idx = args.init_state if cfg.suite != "robosuite" else 0
            r = run_expert_episode(env, idx, args.chunk_size)
        rows.append(r)
        print(f"{r.suite:<14} {r.task[:56]:<56} {r.init_state:>4} {cfg.seed:>4} {'yes' if r.success else 'no':>3} "
              f"{r.steps:>5} {r.seconds:>7.1f}", flush=True)
    for suite in sorted({r.suite for r in rows}):
        sel = [r for r in rows if r.suite == suite]
        print(f"{suite}: {sum(r.success for r in sel)}/{len(sel)} succeeded, "
              f"mean {sum(r.steps for r in sel) / len(sel):.0f} steps")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in rows], f, indent=1)
    return 0 if all(r.success for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
