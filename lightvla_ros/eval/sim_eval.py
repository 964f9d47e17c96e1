"""lightvla-sim-eval: closed-loop evaluation over ROS 2 with real processes.

Each worker owns a private DDS domain (loopback only) and starts two processes through their
console scripts: the sim bridge (`lightvla-sim-bridge`) and the policy (`lightvla-policy` with a
checkpoint, or `lightvla-expert`, the scripted expert with privileged state). It then asks the
bridge for one episode at a time over `~/run_episode` and listens to the action chunks (latency,
kept visual tokens) and the bridge's per-episode stats (dropped/late steps, per-step latency).

    lightvla-sim-eval --checkpoint data/checkpoints/lightvla-tiny --suite libero_object \
        --tasks 0 --init-states 0 --max-steps 40 --report out/report.json
    lightvla-sim-eval --policy expert --suite robosuite --tasks Lift --init-states 0,1,2,3,4
    lightvla-sim-eval --checkpoint CKPT --suite robosuite --tasks Lift --record bags/   # a bag per episode
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import signal
import sys
import tempfile
import time
from pathlib import Path

from lightvla_ros.eval.sim_report import checkpoint_fingerprint, format_summary, summarize, versions

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config"
BRIDGE_NAME = "sim_bridge"
POLICY_NAME = "lightvla_policy"


def config_path(name: str) -> Path:
    """A file of config/: the source tree's, else the installed share/lightvla_ros/config."""
    p = REPO_CONFIG / name
    if p.is_file():
        return p
    try:
        from ament_index_python.packages import get_package_share_directory
        q = Path(get_package_share_directory("lightvla_ros")) / "config" / name
        if q.is_file():
            return q
    except Exception:  # noqa: BLE001  (no ament index: fall through to the clear error)
        pass
    raise FileNotFoundError(f"config file {name} not found in {REPO_CONFIG} or the installed share directory")


def parse_list(text: str) -> list[str]:
    return [t.strip() for t in str(text).split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lightvla-sim-eval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", choices=("vla", "expert"), default="vla")
    ap.add_argument("--checkpoint", help="checkpoint directory or a name such as lightvla-lift "
                                         "(required for --policy vla)")
    ap.add_argument("--suite", default="libero_object",
                    help="libero_spatial|libero_object|libero_goal|libero_10|libero_90|robosuite")
    ap.add_argument("--tasks", default="0", help="comma-separated task indices or names (robosuite: Lift,...)")
    ap.add_argument("--init-states", default="0", help="init-state indices, e.g. 0,3 or 0-19 (robosuite: seeds)")
    ap.add_argument("--max-steps", type=int, default=0, help="policy steps per episode; 0 = the suite's protocol")
    ap.add_argument("--report", default="out/sim_eval_report.json")
    ap.add_argument("--workers", type=int, default=1, help="parallel workers, each with its own ROS domain")
    ap.add_argument("--in-process", action="store_true",
                    help="run the episodes in this process (lightvla_ros.sim.episode: the bridge's protocol and "
                         "the node's observation assembly or the expert node's agent, no ROS, lock-step)")
    ap.add_argument("--record-actions", action="store_true",
                    help="each episode record gets applied_actions: the action applied at every policy step "
                         "(the same seeds give the same list over ROS and --in-process)")
    ap.add_argument("--mode", choices=("lock_step", "wall_clock"), default="lock_step")
    ap.add_argument("--action-input", choices=("step", "chunk"), default="step",
                    help="the bridge applies /lightvla/action (step) or executes /lightvla/action_chunk itself")
    ap.add_argument("--camera-size", type=int, default=None, help="override the config's camera_size")
    ap.add_argument("--render-quality", choices=("fast", "full"), default=None)
    ap.add_argument("--device", default="cpu", help="policy device (cpu, cuda, auto)")
    ap.add_argument("--execution-mode", default=None, help="policy chunk execution (open_loop, async, ...)")
    ap.add_argument("--action-rows", choices=("auto", "oft", "lightvla"), default=None,
                    help="hidden-state rows the action head reads (docs/model.md); default: the config "
                         "file's lightvla_policy action_rows, else auto")
    ap.add_argument("--gripper-postprocess", choices=("auto", "none", "libero"), default="auto",
                    help="what the sim applies to the policy's gripper output; auto: what the checkpoint's "
                         "config.json says (lightvla-finetune --statistics data: none), else the config file's")
    ap.add_argument("--config", default=None, help="YAML with sim_bridge and lightvla_policy sections "
                                                   "(default config/sim_libero.yaml or config/sim_lift.yaml)")
    ap.add_argument("--chunk-size", type=int, default=8, help="expert: actions per chunk")
    ap.add_argument("--action-timeout", type=float, default=120.0, help="s the bridge waits for one action")
    ap.add_argument("--episode-timeout", type=float, default=3600.0, help="s of wall time per episode")
    ap.add_argument("--startup-timeout", type=float, default=600.0, help="s for the nodes to come up")
    ap.add_argument("--log-dir", default=None, help="node logs (default: a temp dir, kept on failure)")
    ap.add_argument("--record", metavar="DIR", default=None,
                    help="record every episode with lightvla-record into DIR/<suite>_<task>_<init>[_<n>]/")
    ap.add_argument("--record-storage", choices=("mcap", "sqlite3"), default="mcap")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    from lightvla_ros.eval.ray_eval import add_arguments as add_ray_arguments
    add_ray_arguments(ap)  # --ray [ADDRESS], --trials-per-task, --results, --resume, ...
    return ap


def episode_list(args) -> list[dict]:
    tasks = parse_list(args.tasks)
    from lightvla_ros.train.collect import parse_indices

    inits = parse_indices(args.init_states)  # "0-19,25"
    if not tasks or not inits:
        raise SystemExit("--tasks and --init-states must name at least one each")
    return [{"task": t, "init_state_index": i} for t in tasks for i in inits]


# ---- one worker: a domain, two processes, episodes in sequence ---------------------------------

def _config_file(args) -> Path:
    return Path(args.config) if args.config else config_path(
        "sim_lift.yaml" if args.suite == "robosuite" else "sim_libero.yaml")


def requested_action_rows(args) -> str:
    """--action-rows, else the config file's lightvla_policy action_rows, else auto (the node's default)."""
    if args.action_rows:
        return args.action_rows
    import yaml
    try:
        data = yaml.safe_load(_config_file(args).read_text()) or {}
    except (OSError, yaml.YAMLError):
        data = {}
    params = (data.get(POLICY_NAME) or {}).get("ros__parameters") or {}
    return str(params.get("action_rows", "auto"))


def action_rows_report(args) -> dict | None:
    """What the policy node will run, resolved from the checkpoint the way load_vla does."""
    if args.policy != "vla":
        return None
    from lightvla_ros.model.checkpoint import read_action_rows
    requested = requested_action_rows(args)
    return {"requested": requested, "resolved": read_action_rows(args.checkpoint, requested)}


def gripper_postprocess(args) -> str | None:
    """--gripper-postprocess, else (auto) what the checkpoint declares, else None (the config file's)."""
    if args.gripper_postprocess != "auto":
        return args.gripper_postprocess
    from lightvla_ros.model.checkpoint import read_gripper_postprocess
    return read_gripper_postprocess(args.checkpoint)


def _node_params(args) -> tuple[Path, dict, str, dict]:
    """(config file, bridge overrides, policy executable, policy overrides)."""
    cfg = _config_file(args)
    bridge = {"suite": args.suite, "mode": args.mode, "action_input": args.action_input,
              "action_timeout": float(args.action_timeout),
              "episode_timeout": float(args.episode_timeout)}
    if args.camera_size:
        bridge["camera_size"] = int(args.camera_size)
    if args.render_quality:
        bridge["render_quality"] = args.render_quality
    if args.record_actions:
        bridge["record_actions"] = True
    if args.policy == "expert":
        bridge.update(publish_privileged=True, gripper_postprocess="none")
        policy = {"chunk_size": int(args.chunk_size), "use_sim_time": args.mode == "lock_step"}
        return cfg, bridge, "lightvla-expert", policy
    gripper = gripper_postprocess(args)
    if gripper is not None:
        bridge["gripper_postprocess"] = gripper
    policy = {"checkpoint": str(Path(args.checkpoint).resolve()), "device": args.device,
              "use_sim_time": args.mode == "lock_step", "action_rows": requested_action_rows(args)}
    if args.execution_mode:
        policy["execution_mode"] = args.execution_mode
    return cfg, bridge, "lightvla-policy", policy


def run_worker(args, episodes: list[dict], worker_id: int, progress=None) -> list[dict]:
    """Runs `episodes` on a fresh domain; calls progress(record) after each. Returns the records."""
    from lightvla_ros.ros.launcher import ros_domain

    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="lightvla_sim_eval_")) / f"worker{worker_id}"
    cfg, bridge_params, policy_exe, policy_params = _node_params(args)
    records: list[dict] = []
    with ros_domain(log_dir=log_dir) as dom:
        bridge = dom.start_node("lightvla-sim-bridge", params_file=cfg, params=bridge_params, name=BRIDGE_NAME)
        policy = dom.start_node(policy_exe, params_file=cfg, params=policy_params, name=POLICY_NAME)
        try:
            bridge.wait_for_log_line(r"sim bridge ready", timeout=args.startup_timeout)
            policy.wait_for_log_line(r"(policy|expert) ready", timeout=args.startup_timeout)
        except (TimeoutError, RuntimeError) as e:
            err = f"nodes did not start: {e}"
            for ep in episodes:
                records.append({**ep, "success": False, "error": err, "worker": worker_id})
                if progress:
                    progress(records[-1])
            return records
        with dom.rclpy_node(f"sim_eval_{worker_id}") as probe:
            client = _EpisodeClient(probe, args, alive=lambda: bridge.is_running() and policy.is_running())
            recorder = None
            if args.record:
                from lightvla_ros.eval.sim_record import EpisodeRecorder
                recorder = EpisodeRecorder(args, dom, probe, cfg, POLICY_NAME)
            for ep in episodes:
                if recorder is not None:
                    try:
                        rec_proc, bag = recorder.start(ep)
                    except (TimeoutError, RuntimeError) as e:
                        rec = {**ep, "success": False, "worker": worker_id, "logs": str(log_dir),
                               "error": f"recorder did not start: {e}"}
                        records.append(rec)
                        if progress:
                            progress(rec)
                        continue
                rec = client.run(ep)
                if recorder is not None:
                    recorder.finish(rec_proc, bag, rec)
                rec["worker"] = worker_id
                rec["logs"] = str(log_dir)
                for proc in (bridge, policy):
                    if not proc.is_running():
                        rec.setdefault("error", f"{proc.name} exited with {proc.returncode}: {proc.log_tail(15)}")
                records.append(rec)
                if progress:
                    progress(rec)
                if any(not p.is_running() for p in (bridge, policy)):
                    break
    return records


class _EpisodeClient:
    """The eval's own node: calls ~/run_episode, collects chunks and the bridge's stats."""

    def __init__(self, probe, args, alive=lambda: True):
        from lightvla_interfaces.msg import ActionChunk
        from lightvla_interfaces.srv import RunEpisode
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from std_msgs.msg import String
        from std_srvs.srv import Trigger

        self.probe, self.args, self.RunEpisode, self.alive = probe, args, RunEpisode, alive
        node = probe.node
        self.chunks: list = []
        self.stats: list[dict] = []
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        node.create_subscription(ActionChunk, "/lightvla/action_chunk", self.chunks.append, 50)
        node.create_subscription(String, "/sim/episode_stats", lambda m: self.stats.append(json.loads(m.data)),
                                 latched)
        self.client = node.create_client(RunEpisode, f"/{BRIDGE_NAME}/run_episode")
        self.reset_client = node.create_client(Trigger, f"/{POLICY_NAME}/reset")
        self.Trigger = Trigger
        probe.wait_for_service(self.client, timeout=60.0)

    def _reset_policy(self) -> None:
        if not self.probe.spin_until(self.reset_client.service_is_ready, 5.0):
            return
        fut = self.reset_client.call_async(self.Trigger.Request())
        self.probe.spin_until(fut.done, 30.0)

    def run(self, ep: dict) -> dict:
        rec = dict(ep)
        self._reset_policy()   # answered after the reset: no chunk of the last episode is published after it
        self.probe.drain()     # so the last episode's chunks DDS has delivered are handled here, not counted
        self.chunks.clear()
        seen_stats = len(self.stats)
        req = self.RunEpisode.Request(suite=self.args.suite, task=str(ep["task"]),
                                      init_state_index=int(ep["init_state_index"]),
                                      max_steps=int(self.args.max_steps))
        t0 = time.monotonic()
        fut = self.client.call_async(req)
        bound = self.args.episode_timeout + 120.0
        self.probe.spin_until(lambda: fut.done() or not self.alive(), bound)
        if not fut.done():
            why = "a node exited" if not self.alive() else f"no answer within {bound:.0f} s"
            rec.update(success=False, error=f"run_episode did not complete: {why}")
            return rec
        res = fut.result()
        rec["wall_s"] = time.monotonic() - t0
        if not res.accepted:
            rec.update(success=False, error=f"bridge rejected the episode: {res.message}")
            return rec
        self.probe.spin_until(lambda: len(self.stats) > seen_stats, 10.0)
        # every chunk was published before the bridge got the action it served, so before the episode
        # ended: handle those DDS has delivered (lock-step: all of them; a chunk published after the
        # last step of a wall-clock episode may be missed, as it was never applied)
        self.probe.drain()
        r = res.result
        rec.update(task_name=r.task_name, success=bool(r.success), steps=int(r.steps),
                   duration=float(r.duration), message=r.message)
        if len(self.stats) > seen_stats:
            s = self.stats[-1]
            rec.update(task_index=s.get("task_index", -1), instruction=s.get("instruction", ""),
                       policy_steps=s["policy_steps"], wait_steps=s["wait_steps"],
                       actions_applied=s["actions_applied"], dropped_steps=s["dropped_steps"],
                       late_actions=s["late_actions"], bad_actions=s["bad_actions"],
                       observations_published=s["observations_published"],
                       step_latencies=s.get("step_latency_raw", []))
            if "applied_actions" in s:
                rec["applied_actions"] = s["applied_actions"]
        else:
            rec["error"] = "no /sim/episode_stats for this episode"
        rec["chunks"] = len(self.chunks)
        rec["inference_latencies"] = [float(c.inference_latency) for c in self.chunks if c.chunk_size > 1
                                      or c.inference_latency > 0]
        rec["kept_tokens"] = [int(c.visual_tokens_kept) for c in self.chunks if c.visual_tokens_total > 0]
        rec["total_tokens"] = [int(c.visual_tokens_total) for c in self.chunks if c.visual_tokens_total > 0]
        return rec


def node_settings(args) -> tuple[dict, dict]:
    """(sim_bridge, lightvla_policy) parameters: the config file's sections with the overrides."""
    import yaml

    cfg_file, bridge_params, _, _ = _node_params(args)
    data = yaml.safe_load(Path(cfg_file).read_text()) or {}
    bridge = {**((data.get(BRIDGE_NAME) or {}).get("ros__parameters") or {}), **bridge_params}
    return bridge, (data.get(POLICY_NAME) or {}).get("ros__parameters") or {}


def run_in_process(args, episodes: list[dict], progress=None) -> list[dict]:
    """The episodes without ROS: same env settings (the config's sim_bridge section and the
    overrides), same wait steps, max steps and observation; the VLA through the node's runner
    (lock-step, as the node's config runs it) or the expert through the expert node's agent."""
    from lightvla_ros.sim import SimConfig, make_env
    from lightvla_ros.sim.episode import run_expert_policy_episode, run_policy_episode

    bridge, policy_cfg = node_settings(args)
    policy = None
    if args.policy == "vla":
        from lightvla_ros.policy.vla_policy import VLAPolicy

        rows = requested_action_rows(args)
        policy = VLAPolicy(args.checkpoint, device=args.device, dtype="float32" if args.device == "cpu" else "auto",
                           **({} if rows == "auto" else {"action_rows": rows}))
    records = []
    by_task: dict[str, list[dict]] = {}
    for ep in episodes:
        by_task.setdefault(str(ep["task"]), []).append(ep)
    for task, eps in by_task.items():
        sim_cfg = SimConfig(suite=args.suite, task=int(task) if task.isdigit() else task,
                            camera_size=int(bridge.get("camera_size", 256)),
                            render_quality=str(bridge.get("render_quality", "fast")),
                            image_convention=str(bridge.get("image_convention", "openvla")),
                            use_cameras=policy is not None, seed=int(bridge.get("seed", 0)))
        with make_env(sim_cfg) as env:
            for n, ep in enumerate(eps, start=1):
                if policy is None:
                    out = run_expert_policy_episode(env, ep["init_state_index"], max_steps=args.max_steps,
                                                    chunk_size=int(args.chunk_size), episode_id=n,
                                                    record_actions=args.record_actions)
                else:
                    out = run_policy_episode(env, policy, ep["init_state_index"], max_steps=args.max_steps,
                                             execute=int(policy_cfg.get("open_loop_steps", 0) or 0),
                                             gripper_postprocess=str(bridge.get("gripper_postprocess", "none")),
                                             record_actions=args.record_actions)
                rec = {**ep, "task_name": out.task, "success": out.success, "steps": out.wait_steps + out.policy_steps,
                       "policy_steps": out.policy_steps, "wait_steps": out.wait_steps,
                       "actions_applied": out.policy_steps - out.dropped_steps, "dropped_steps": out.dropped_steps,
                       "duration": out.seconds,
                       "chunks": out.chunks, "kept_tokens": out.kept_tokens,
                       "total_tokens": [out.total_tokens] * len(out.kept_tokens), "instruction": env.instruction,
                       "message": out.message, "in_process": True}
                if args.record_actions:
                    rec["applied_actions"] = out.actions
                records.append(rec)
                if progress:
                    progress(rec)
    return records


def _worker_entry(args, episodes, worker_id, q) -> None:
    try:
        run_worker(args, episodes, worker_id, progress=q.put)
    except Exception as e:  # noqa: BLE001  (reported, not swallowed: the main process prints it)
        for ep in episodes:
            q.put({**ep, "success": False, "error": f"worker {worker_id} crashed: {type(e).__name__}: {e}",
                   "worker": worker_id})
    finally:
        q.put(None)


def run_eval(args) -> dict:
    if args.record:
        from lightvla_ros.eval.sim_record import check_record_dir
        check_record_dir(args.record)
    if args.policy == "vla":
        if not args.checkpoint:
            raise SystemExit("--policy vla needs --checkpoint DIR (or use --policy expert)")
        from lightvla_ros.paths import CheckpointNotFound, resolve_checkpoint
        try:  # a directory, or a name such as lightvla-libero-object-task0 (docs/install.md)
            args.checkpoint = str(resolve_checkpoint(args.checkpoint))
        except CheckpointNotFound as e:
            raise SystemExit(f"{e}\n(generate one with lightvla-make-checkpoint DIR --size tiny)") from None
    if args.ray is not None:  # the Ray protocol runner: lightvla_ros.eval.ray_eval, docs/ray.md
        if args.in_process or args.record:
            raise SystemExit("--ray runs the episodes in-process on Ray workers: no --in-process, no --record")
        from lightvla_ros.eval.ray_eval import run_ray_eval
        return run_ray_eval(args)
    episodes = episode_list(args)
    action_rows = action_rows_report(args)  # before any worker starts
    workers = max(1, min(int(args.workers), len(episodes)))
    t0 = time.monotonic()
    bar = None
    if not args.quiet:
        from tqdm import tqdm
        bar = tqdm(total=len(episodes), desc=f"{args.policy} on {args.suite}", unit="ep", file=sys.stderr)
    records: list[dict] = []

    def progress(rec: dict) -> None:
        records.append(rec)
        if bar is not None:
            ok = sum(int(bool(r.get("success"))) for r in records)
            bar.set_postfix_str(f"success {ok}/{len(records)}")
            bar.update(1)

    if args.in_process:
        if args.record:
            raise SystemExit("--in-process runs without ROS: no --record")
        run_in_process(args, episodes, progress)
    elif workers == 1:
        run_worker(args, episodes, 0, progress)
    else:
        ctx = mp.get_context("spawn")  # fresh interpreters: rclpy and MuJoCo state is per process
        q = ctx.Queue()
        shards = [episodes[i::workers] for i in range(workers)]
        procs = [ctx.Process(target=_worker_entry, args=(args, shard, i, q), daemon=False)
                 for i, shard in enumerate(shards)]
        for p in procs:
            p.start()
        done = 0
        deadline = time.monotonic() + (args.episode_timeout + 300) * max(len(s) for s in shards)
        while done < workers and time.monotonic() < deadline:
            try:
                item = q.get(timeout=5.0)
            except Exception:  # noqa: BLE001  (queue.Empty: check the workers are alive)
                if not any(p.is_alive() for p in procs):
                    break
                continue
            if item is None:
                done += 1
            else:
                progress(item)
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
                p.join(timeout=10)
    if bar is not None:
        bar.close()
    key = {(str(e["task"]), e["init_state_index"]): i for i, e in enumerate(episodes)}
    records.sort(key=lambda r: key.get((str(r.get("task")), r.get("init_state_index")), 1 << 30))
    report = {
        "policy": args.policy, "suite": args.suite, "mode": args.mode, "workers": workers,
        "checkpoint": checkpoint_fingerprint(args.checkpoint) if args.policy == "vla" else None,
        "action_rows": action_rows,
        "gripper_postprocess": str(node_settings(args)[0].get("gripper_postprocess", "none")),
        "args": {k: v for k, v in vars(args).items()},
        "versions": versions(),
        "wall_time_s": time.monotonic() - t0,
        "episodes": records,
    }
    report.update(summarize(records))
    return report


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # unwinds the ros_domain contexts: the nodes are stopped


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    report = run_eval(args)
    path = Path(args.report)
    path.parent.mkdir(parents=True, exist_ok=True)
    report["report_path"] = str(path.resolve())
    path.write_text(json.dumps(report, indent=2))
    print(format_summary(report), flush=True)
    if args.ray is not None:
        from lightvla_ros.eval.ray_eval import format_extra
        print(format_extra(report), flush=True)
    if args.record:
        bags = [e["bag"] for e in report["episodes"] if e.get("bag")]
        bad = [f"{e['bag']}: {e['bag_error']}" for e in report["episodes"] if e.get("bag_error")]
        print(f"recorded {len(bags)} bag(s) in {Path(args.record).resolve()} ({args.record_storage})"
              + "".join(f"\n  problem: {b}" for b in bad), flush=True)
    o = report["overall"]
    return 1 if o["errors"] == o["episodes"] and o["episodes"] else 0


if __name__ == "__main__":
    sys.exit(main())
