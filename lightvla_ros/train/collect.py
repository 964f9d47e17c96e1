"""Expert demonstrations recorded exactly as the policy will see them, in the fine-tuning format.

    lightvla-collect OUT_DIR --suite robosuite --tasks Lift --init-states 100-149 [--camera-size 128]

Per episode: reset to the init state (robosuite: the seed), the episode protocol's wait steps
(`SimEnv.num_wait_steps`, the policy is not asked, nothing recorded), then the scripted expert
until success or max steps. Every recorded step holds what the policy node would have assembled
from the sim bridge's topics at that step: the camera images in the bridge's convention and size,
the proprio built by the node's own ObservationAssembler from the eef pose and the joint states,
and the 7-dim action the sim then applied (with --action-noise: the expert's action, the sim applying
it plus noise, DART). With --plan-targets each step also records the chunk the expert plans from
that step (`action_chunks`), which training uses as the step's target: the policy plans a chunk
from whatever step it is asked at, while a chunked expert's recorded actions t..t+7 are, past its
own chunk starts, the tail of an older plan. Failed expert episodes are reported, not saved.
Output: one `.npz` per episode (lightvla_ros.train.dataset) plus `dataset.json` (docs/training.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ..policy.clock import NEVER, to_ns
from ..policy.config import LIBERO_PROPRIO
from ..policy.observation_sync import ObservationAssembler
from ..policy.types import Observation
from .dataset import Episode, save_episode

# what the policy node assembles for LIBERO / robosuite checkpoints (config/sim_*.yaml)
PROPRIO_SOURCES = LIBERO_PROPRIO
DATASET_FORMAT = "lightvla.dataset/1"
NOISE_AR = 0.8  # --action-noise: AR(1) coefficient of the injected noise (a deviation lasts a few steps)


def parse_indices(spec: str) -> list[int]:
    """'0-4,9' -> [0, 1, 2, 3, 4, 9]."""
    out: list[int] = []
    for part in str(spec).split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def policy_view(assembler: ObservationAssembler, sim_obs, stamp: int) -> Observation:
    """The Observation the node would assemble from the bridge's messages for this sim state
    (stamp: integer ns, the sim time)."""
    for cam in assembler.camera_names:
        assembler.add_image(cam, sim_obs.images[cam], stamp)
    assembler.add_joint_state(sim_obs.joint_names, sim_obs.joint_positions, stamp)
    assembler.add_eef_pose(sim_obs.eef_pos, sim_obs.eef_quat, stamp)
    obs = assembler.assemble(stamp)
    if not isinstance(obs, Observation):
        raise RuntimeError(f"the sim observation does not assemble: {obs.message}")
    return obs


def collect_episode(env, init_state: int, chunk_size: int = 8, proprio_sources=PROPRIO_SOURCES,
                    action_noise: float = 0.0, noise_seed: int = 0, plan_targets: bool = False,
                    noise_phases: tuple[str, ...] | None = None, start_offset: float = 0.0):
    """-> (Episode or None if the expert failed, info dict).

    action_noise > 0 (DART, Laskey et al. 2017): the sim applies the expert's action plus
    temporally correlated Gaussian noise on the position dims (AR(1), coefficient NOISE_AR, that
    stationary std in action units), and the episode records the expert's own action at each
    state: the correction back to its plan. Used with chunk_size 1, so every recorded action is
    the expert's closed-loop answer to the state recorded with it, or with plan_targets. With
    noise_phases (expert phase names, e.g. ("above", "lift", "carry")) the noise is applied only
    while the expert is in one of them: deviations in free space, none while it descends onto,
    grasps or releases the object, where noise knocks the object or misses the grasp.

    start_offset > 0 (metres): after the wait steps the arm first moves, unrecorded, to a random
    point up to that far from its start on each axis (seeded by noise_seed and the init state), and
    the expert starts from there: demos of the large corrections a policy needs once it is a few
    centimetres off, which clean demos from one start pose never show."""
    from ..sim import NOOP_ACTION
    from ..sim.experts import make_expert

    t0 = time.perf_counter()
    sim_obs = env.reset(init_state)
    for _ in range(env.num_wait_steps):
        sim_obs, _ = env.step(NOOP_ACTION)
    rng = np.random.default_rng([noise_seed, init_state])
    if start_offset > 0:
        sim_obs = _move_to(env, sim_obs, sim_obs.eef_pos + rng.uniform(-start_offset, start_offset, 3))
    assembler = ObservationAssembler(env.camera_names, proprio_sources=list(proprio_sources),
                                     instruction=env.instruction, max_observation_age=NEVER)
    expert = make_expert(env)
    expert.reset()
    unknown = set(noise_phases or ()) - {ph.name for ph in expert.phases}
    if unknown:
        raise ValueError(f"unknown expert phase(s) {sorted(unknown)}; this task's expert has "
                         f"{[ph.name for ph in expert.phases]}")
    images, proprio, actions, stamps, plans = [], [], [], [], []
    noise = np.zeros(3)
    success = False
    while len(actions) < env.max_steps and not success:
        for k, action in enumerate(expert.act_chunk(sim_obs, chunk_size)):
            if plan_targets:
                plans.append(expert.plan(sim_obs, chunk_size, rewind=chunk_size - k))
            obs = policy_view(assembler, sim_obs, to_ns(sim_obs.sim_time))
            images.append(np.stack(obs.images))
            proprio.append(obs.proprio)
            actions.append(np.asarray(action, dtype=np.float32))
            stamps.append(sim_obs.sim_time)
            applied = np.array(action, dtype=np.float32)
            if action_noise > 0:
                noise = NOISE_AR * noise + rng.normal(0.0, action_noise * np.sqrt(1 - NOISE_AR ** 2), 3)
                if noise_phases is None or expert.phases[expert.phase].name in noise_phases:
                    applied[:3] = np.clip(applied[:3] + noise, -1.0, 1.0)
            sim_obs, success = env.step(applied)
            if success or len(actions) >= env.max_steps:
                break
    info = {"init_state": init_state, "success": bool(success), "steps": len(actions),
            "seconds": round(time.perf_counter() - t0, 2)}
    if not success:
        return None, info
    ep = Episode(images=np.stack(images), proprio=np.stack(proprio), actions=np.stack(actions),
                 instruction=env.instruction, camera_names=tuple(env.camera_names), timestamps=np.asarray(stamps),
                 action_chunks=np.stack(plans) if plan_targets else None)
    return ep, info


def _move_to(env, sim_obs, target: np.ndarray, max_steps: int = 30, tol: float = 0.005):
    """Drive the eef toward `target` (world metres) with the gripper open; -> the last observation."""
    from ..sim.experts import position_action

    for _ in range(max_steps):
        if np.linalg.norm(np.asarray(target) - np.asarray(sim_obs.eef_pos)) < tol:
            break
        action = np.zeros(7)
        action[:3], action[6] = position_action(target, sim_obs.eef_pos), -1.0
        sim_obs, _ = env.step(action)
    return sim_obs


def write_dataset_meta(out: Path, **fields) -> Path:
    path = out / "dataset.json"
    meta = json.loads(path.read_text()) if path.is_file() else {}
    meta.update(format=DATASET_FORMAT, **fields)
    path.write_text(json.dumps(meta, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="lightvla-collect", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="dataset directory (created; episodes are added)")
    ap.add_argument("--suite", default="robosuite")
    ap.add_argument("--tasks", default="Lift", help="comma-separated task indices or names")
    ap.add_argument("--init-states", default="0-9", help="e.g. 100-149 (robosuite: seeds)")
    ap.add_argument("--camera-size", type=int, default=128, help="rendered size, as the sim bridge's camera_size")
    ap.add_argument("--render-quality", choices=("fast", "full"), default="fast")
    ap.add_argument("--image-convention", default="openvla")
    ap.add_argument("--chunk-size", type=int, default=8, help="expert actions planned per observation")
    ap.add_argument("--action-noise", type=float, default=0.0,
                    help="DART: std (action units) of correlated noise added to the applied position actions; "
                         "the recorded action stays the expert's (use with --chunk-size 1)")
    ap.add_argument("--noise-seed", type=int, default=0)
    ap.add_argument("--start-offset", type=float, default=0.0,
                    help="metres: the expert starts from a random eef offset up to this far per axis "
                         "(reached in unrecorded steps after the wait steps)")
    ap.add_argument("--noise-phases", default=None,
                    help="comma-separated expert phases the noise is applied in (e.g. above,lift,carry; default all)")
    ap.add_argument("--plan-targets", action="store_true",
                    help="also record the chunk the expert plans from every step; training uses it as the target")
    args = ap.parse_args(argv)

    from ..sim import SimConfig, make_env

    noise_phases = tuple(n.strip() for n in args.noise_phases.split(",") if n.strip()) if args.noise_phases else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    saved, failed = 0, []
    for task in tasks:
        task_key = int(task) if task.isdigit() else task
        cfg = SimConfig(suite=args.suite, task=task_key, camera_size=args.camera_size,
                        render_quality=args.render_quality, image_convention=args.image_convention)
        with make_env(cfg) as env:
            for i in parse_indices(args.init_states):
                ep, info = collect_episode(env, i, args.chunk_size, action_noise=args.action_noise,
                                           noise_seed=args.noise_seed, plan_targets=args.plan_targets,
                                           noise_phases=noise_phases, start_offset=args.start_offset)
                name = f"{args.suite}_{env.task_name}_{i:04d}"
                if ep is None:
                    failed.append(name)
                    print(f"{name}: expert failed after {info['steps']} steps: not saved", flush=True)
                    continue
                save_episode(ep, out / f"{name}.npz")
                saved += 1
                print(f"{name}: {info['steps']} steps, {info['seconds']} s", flush=True)
            write_dataset_meta(out, suite=args.suite, camera_names=list(env.camera_names),
                               camera_size=args.camera_size, image_convention=args.image_convention,
                               render_quality=args.render_quality, control_rate_hz=1.0 / env.control_period,
                               proprio_sources=list(PROPRIO_SOURCES), action_space="eef_delta_pose_gripper",
                               wait_steps=env.num_wait_steps, source="lightvla-collect (scripted expert)",
                               expert_chunk_size=args.chunk_size, action_noise=args.action_noise,
                               noise_phases=list(noise_phases) if noise_phases else None,
                               start_offset=args.start_offset,
                               plan_targets=args.plan_targets)
    print(f"saved {saved} episode(s) to {out}; expert failures: {len(failed)} {failed}", flush=True)
    return 0 if saved else 1


if __name__ == "__main__":
    sys.exit(main())
