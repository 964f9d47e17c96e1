"""lightvla-sim-eval --ray [ADDRESS]: the LIBERO protocol over a Ray cluster, one model for many simulators.

Every episode (suite, task, init state, seed) is a call on one of `--workers` sim-worker actors
(SimWorker: an environment per task, the in-process episode loop, no ROS). The VLA lives once in a
PolicyServer actor (on a GPU when --device cuda) that batches the observations of all workers into
one forward pass; the scripted expert runs inside each worker. Without ADDRESS a local cluster is
started and stopped; with one (`auto`, `HOST:6379`, `ray://HOST:10001`) the run joins that cluster.

    lightvla-sim-eval --ray --checkpoint CKPT --suite libero_spatial,libero_object,libero_goal,libero_10 \\
        --tasks all --trials-per-task 50 --workers 8 --device cuda --results out/libero.jsonl
    lightvla-sim-eval --ray --checkpoint CKPT ... --results out/libero.jsonl --resume   # after a crash

Each finished episode is appended to the JSONL results (episode_log.EpisodeLog: the source of
truth; --resume skips what it holds). A worker that dies (killed, out of memory, an episode past
--episode-timeout) is replaced; its episode is retried once on another worker and the report says
so. A policy server that dies is restarted by Ray, which retries its in-flight requests.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from pathlib import Path
from typing import Callable

from lightvla_ros.eval.episode_log import EpisodeLog
from lightvla_ros.eval.sim_eval import action_rows_report, node_settings, parse_list, requested_action_rows
from lightvla_ros.eval.sim_report import checkpoint_fingerprint, summarize, versions
from lightvla_ros.eval.sim_worker import EpisodeSettings, EpisodeSpec, SimWorker, episode_seed, remove_scratch

FORWARDED_ENV = ("MUJOCO_GL", "PYOPENGL_PLATFORM", "LIBERO_ASSETS_DIR", "LIGHTVLA_LIBERO_CONFIG_DIR")
POLICY_RESTARTS = 3       # a server that keeps dying (a broken checkpoint) ends the run instead
CLEANUP_TIMEOUT_S = 60.0  # for the task removing a dead worker's files on its node


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The --ray options of lightvla-sim-eval."""
    g = ap.add_argument_group("Ray (docs/ray.md)")
    g.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run the episodes on a Ray cluster: ADDRESS (auto, HOST:PORT, ray://HOST:10001) or, "
                        "omitted, a local cluster started for this run; --suite may then list several suites")
    g.add_argument("--trials-per-task", type=int, default=0,
                   help="init states 0..N-1 of every task (LIBERO protocol: 50); overrides --init-states")
    g.add_argument("--seed", type=int, default=0, help="base of the per-episode seeds")
    g.add_argument("--results", default=None,
                   help="JSONL results, one line per finished episode (default: --report with .jsonl)")
    g.add_argument("--resume", action="store_true", help="skip the episodes --results already holds")
    g.add_argument("--max-batch", type=int, default=8, help="observations per policy forward pass, at most")
    g.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long a batch waits for more observations once its first arrived")
    g.add_argument("--worker-cpus", type=float, default=1.0, help="Ray CPUs per sim worker")
    g.add_argument("--policy-servers", type=int, default=1,
                   help="policy server actors, each holding the model once (one per GPU); workers are "
                        "spread over them")
    g.add_argument("--policy-cpus", type=float, default=1.0, help="Ray CPUs per policy server")
    g.add_argument("--policy-gpus", type=float, default=None,
                   help="Ray GPUs per policy server (default: 1 with --device cuda*, else 0)")
    g.add_argument("--expert-cameras", action="store_true",
                   help="render the cameras for the scripted expert too (it reads privileged state only)")


# ---- what to run ---------------------------------------------------------------------------

def episode_specs(args) -> list[EpisodeSpec]:
    """Suites x tasks x init states, in that order; `--tasks all` is every task of each suite."""
    from lightvla_ros.sim import SUITES, list_tasks
    from lightvla_ros.train.collect import parse_indices

    suites = parse_list(args.suite)
    unknown = [s for s in suites if s not in SUITES]
    if not suites or unknown:
        raise SystemExit(f"unknown suite(s) {unknown}; valid: {', '.join(SUITES)}")
    inits = list(range(args.trials_per_task)) if args.trials_per_task > 0 else parse_indices(args.init_states)
    specs = []
    for suite in suites:
        tasks = parse_list(args.tasks)
        if tasks == ["all"]:
            tasks = [str(i) for i in range(len(list_tasks(suite)))]
        if not tasks or not inits:
            raise SystemExit("--tasks and --init-states (or --trials-per-task) must name at least one each")
        specs += [EpisodeSpec(suite, t, i, episode_seed(args.seed, suite, t, i)) for t in tasks for i in inits]
    return specs


def episode_settings(args, suite: str) -> EpisodeSettings:
    """The suite's config file (sim_bridge / lightvla_policy sections) with the command-line overrides,
    as lightvla-sim-eval --in-process reads them."""
    from lightvla_ros.policy.config import RunnerConfig

    bridge, policy_cfg = node_settings(argparse.Namespace(**{**vars(args), "suite": suite}))
    expert = args.policy == "expert"
    return EpisodeSettings(
        policy=args.policy, camera_size=int(bridge.get("camera_size", 256)),
        render_quality=str(bridge.get("render_quality", "fast")),
        image_convention=str(bridge.get("image_convention", "openvla")),
        use_cameras=not expert or bool(args.expert_cameras),
        gripper_postprocess="none" if expert else str(bridge.get("gripper_postprocess", "none")),
        execute=int(policy_cfg.get("open_loop_steps", RunnerConfig.open_loop_steps) or 0),
        max_steps=int(args.max_steps),
        expert_chunk_size=int(args.chunk_size))


def policy_kwargs(args) -> dict:
    rows = requested_action_rows(argparse.Namespace(**{**vars(args), "suite": parse_list(args.suite)[0]}))
    return {"device": args.device, "dtype": "float32" if args.device == "cpu" else "auto",
            **({} if rows == "auto" else {"action_rows": rows})}


# ---- the run -------------------------------------------------------------------------------

def run_ray_eval(args, use_ray: bool = True, on_event: Callable[[str, dict], None] | None = None,
                 specs: list[EpisodeSpec] | None = None) -> dict:
    """The whole evaluation -> the report (lightvla-sim-eval's schema plus per-suite confidence
    intervals, throughput, batch sizes, utilisation and faults). use_ray=False runs the same
    episodes in this process (one worker, the model in-process, batch 1): the reference a Ray run
    must reproduce. on_event(kind, data) sees worker starts and deaths and finished episodes.
    specs: the episodes (default: from args; --suite must then list their suites)."""
    specs = episode_specs(args) if specs is None else list(specs)
    suites = list(dict.fromkeys(s.suite for s in specs))
    settings = {suite: episode_settings(args, suite) for suite in suites}
    ckpt = None
    if args.policy == "vla":
        ckpt = {k: v for k, v in checkpoint_fingerprint(args.checkpoint).items() if k != "path"}
        ckpt["action_rows"] = action_rows_report(argparse.Namespace(**{**vars(args), "suite": suites[0]}))
    results = Path(args.results or Path(args.report).with_suffix(".jsonl"))
    header = {"policy": args.policy, "checkpoint": ckpt,
              "settings": {s: dataclasses.asdict(settings[s]) for s in suites},
              "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "versions": versions()}
    with EpisodeLog.open(results, header, resume=args.resume) as log:
        todo = [s for s in specs if s.key not in log.finished]
        loaded = len(log.records)
        t0 = time.monotonic()
        first_start: list[float] = []  # when the first episode started: the cluster and a worker were up
        bar = _progress(args, len(specs), len(specs) - len(todo))

        def event(kind: str, data: dict) -> None:
            if kind == "episode_started" and not first_start:
                first_start.append(time.monotonic() - t0)
            if kind == "episode":
                log.append(data)
                if bar is not None:
                    ok = sum(int(bool(log.finished[s.key].get("success"))) for s in specs if s.key in log.finished)
                    bar.update(1)
                    bar.set_postfix_str(f"success {ok}/{len(log.finished)}")
            if on_event is not None:
                on_event(kind, data)

        try:
            if not todo:  # all finished in an earlier run: the report only
                extras = {"backend": "ray" if use_ray else "local", "workers": 0}
            elif use_ray:
                extras = _run_on_ray(args, todo, settings, event)
            else:
                extras = _run_locally(args, todo, settings, event)
        finally:
            if bar is not None:
                bar.close()
        wall = time.monotonic() - t0
        last = {r["key"]: r for r in log.records}  # an unfinished episode: its last (error) record
        records = [log.finished.get(s.key) or last.get(s.key) for s in specs]
        records = [r for r in records if r is not None]
        new_episodes = len(log.records) - loaded
    extras["startup_s"] = first_start[0] if first_start else None
    return build_report(args, specs, records, wall_s=wall, new_episodes=new_episodes, extras=extras,
                        results=results)


def _progress(args, total: int, done: int):
    if args.quiet:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=done, desc=f"{args.policy} on {args.suite}", unit="ep", file=sys.stderr,
                smoothing=0.05)


def _run_locally(args, todo: list[EpisodeSpec], settings: dict, event) -> dict:
    factory = None
    if args.policy == "vla":
        from lightvla_ros.policy.vla_policy import VLAPolicy
        factory = functools.partial(VLAPolicy, str(Path(args.checkpoint).resolve()), **policy_kwargs(args))
    worker = SimWorker(settings, factory, worker_id=0)
    event("worker_started", worker.info())
    try:
        for spec in todo:
            event("episode_started", {**worker.info(), **spec.to_dict()})
            try:
                rec = worker.run(spec)
            except Exception as e:  # noqa: BLE001  (recorded; resume runs it again)
                rec = {**spec.to_dict(), "key": spec.key, "success": False, "worker": 0,
                       "error": f"{type(e).__name__}: {e}"}
            event("episode", {**rec, "attempt": 1})
    finally:
        worker.close()
    return {"backend": "local", "workers": 1}


# ---- Ray -----------------------------------------------------------------------------------

def _connect(args) -> bool:
    """ray.init for this run; True when this call started it (and must shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    env_vars = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    runtime_env = {"env_vars": env_vars} if env_vars else None
    if args.ray == "local":
        need = args.workers * args.worker_cpus + (args.policy_cpus if args.policy == "vla" else 0)
        ray.init(address="local", num_cpus=max(os.cpu_count() or 1, math.ceil(need)), include_dashboard=False,
                 log_to_driver=False, object_store_memory=512 << 20, runtime_env=runtime_env)
    else:
        ray.init(address=args.ray, log_to_driver=False, runtime_env=runtime_env)
    return True


def _check_resources(args, gpus: float) -> None:
    """Fail now, not after an endless wait, when the cluster can never place the actors."""
    import ray

    have = ray.cluster_resources()
    if gpus * args.policy_servers > have.get("GPU", 0):
        raise SystemExit(f"{args.policy_servers} policy server(s) ask for {gpus:g} GPU(s) each but the cluster has "
                         f"{have.get('GPU', 0):g}; use --device cpu, fewer --policy-servers or add a GPU node")
    if args.worker_cpus > have.get("CPU", 0):
        raise SystemExit(f"a sim worker asks for {args.worker_cpus:g} CPU(s) but the cluster has "
                         f"{have.get('CPU', 0):g}")


class _Pool:
    """The sim-worker actors: start, replace the dead, hand out episodes."""

    def __init__(self, ray, actor_cls, settings, factory_for, args, run_dir: str, event):
        self.ray, self.actor_cls, self.settings, self.factory_for = ray, actor_cls, settings, factory_for
        self.args, self.run_dir, self.event = args, run_dir, event
        self.next_id = 0
        self.last_start = time.monotonic()
        self.starting: dict = {}   # info ref -> (worker id, handle)
        self.idle: list[int] = []
        self.handles: dict[int, object] = {}
        self.info: dict[int, dict] = {}
        self.last_task: dict[int, tuple] = {}

    def start(self) -> None:
        wid = self.next_id
        self.next_id += 1
        self.last_start = time.monotonic()
        handle = self.actor_cls.options(num_cpus=self.args.worker_cpus, max_restarts=0).remote(
            self.settings, self.factory_for(wid), wid, os.path.join(self.run_dir, f"worker{wid}"))
        self.handles[wid] = handle
        self.starting[handle.info.remote()] = (wid, handle)

    def started(self, ref) -> None:
        wid, _ = self.starting.pop(ref)
        try:
            self.info[wid] = self.ray.get(ref)
        except Exception as e:  # noqa: BLE001  (the run goes on with the others; with none left, the loop starts one)
            self.event("worker_failed", {"worker": wid, "error": f"{type(e).__name__}: {e}"})
            self.handles.pop(wid, None)
            return
        self.idle.append(wid)
        self.event("worker_started", self.info[wid])

    def pick(self, pending: deque) -> EpisodeSpec:
        """The next episode for the worker at the head of idle: one of its current task if any
        (the environment is kept), else the first pending."""
        wid = self.idle[0]
        last = self.last_task.get(wid)
        for i, spec in enumerate(pending):
            if (spec.suite, spec.task) == last:
                del pending[i]
                return spec
        return pending.popleft()

    def remove(self, wid: int) -> dict:
        """A dead worker: its files removed on its node, its handle dropped."""
        info = self.info.get(wid, {"worker": wid})
        handle = self.handles.pop(wid, None)
        if handle is not None:
            try:
                self.ray.kill(handle, no_restart=True)  # an unavailable actor may still run: make sure
            except Exception:  # noqa: BLE001  (already gone)
                pass
        if wid in self.idle:
            self.idle.remove(wid)
        cleaned = False
        node = info.get("node_id")
        if node:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
            task = self.ray.remote(remove_scratch).options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
            try:
                cleaned = bool(self.ray.get(task.remote(info.get("scratch_dir")), timeout=CLEANUP_TIMEOUT_S))
            except Exception:  # noqa: BLE001  (the node itself may be gone: nothing left to clean there)
                cleaned = False
        return {**info, "scratch_removed": cleaned}


def _run_on_ray(args, todo: list[EpisodeSpec], settings: dict, event) -> dict:
    try:
        import ray
        from ray.exceptions import RayActorError, RayTaskError
    except ImportError as e:
        raise SystemExit(f"--ray needs the ray extra ({e}): pip install .[ray], or "
                         "pip install -r requirements/ray.txt") from e

    from lightvla_ros.eval.policy_server import RemotePolicy, start_server

    started_here = _connect(args)
    run_dir = os.path.join(tempfile.gettempdir(), f"lightvla_ray_{uuid.uuid4().hex[:8]}")
    servers, pool = [], None
    faults = {"worker_deaths": [], "retried_episodes": []}
    server_pids: set[int] = set()  # every policy server process seen: more than one = restarts
    try:
        gpus = 0.0
        if args.policy == "vla":
            gpus = args.policy_gpus if args.policy_gpus is not None else \
                (1.0 if str(args.device).startswith("cuda") else 0.0)
        _check_resources(args, gpus)
        if args.policy == "vla":
            n = max(1, args.policy_servers)
            # a batch never holds more than the workers sending to its server: it closes when they all did
            max_batch = max(1, min(args.max_batch, math.ceil(args.workers / n)))
            servers = [start_server(str(Path(args.checkpoint).resolve()), max_batch=max_batch,
                                    max_wait_s=args.max_wait_ms / 1e3, num_cpus=args.policy_cpus, num_gpus=gpus,
                                    max_restarts=POLICY_RESTARTS, max_concurrency=max(64, 4 * args.workers),
                                    **policy_kwargs(args)) for _ in range(n)]
            for info in ray.get([s.describe.remote() for s in servers], timeout=args.startup_timeout):
                server_pids.add(info["pid"])
                event("policy_server_started", info)

        def factory_for(wid: int):  # worker k talks to server k mod n; the expert needs none
            if not servers:
                return None
            return functools.partial(RemotePolicy, servers[wid % len(servers)],
                                     args.action_timeout + args.startup_timeout)

        pool = _Pool(ray, ray.remote(_RaySimWorker), settings, factory_for, args, run_dir, event)
        for _ in range(max(1, min(args.workers, len(todo)))):
            pool.start()
        pending = deque(todo)
        attempts: dict[str, int] = {}
        retried_after: dict[str, str] = {}
        running: dict = {}  # episode ref -> (worker id, spec, start time)
        killed: set[int] = set()  # workers killed for an episode past --episode-timeout
        while pending or running:
            while pool.idle and pending:
                wid = pool.idle[0]
                spec = pool.pick(pending)
                pool.idle.pop(0)
                pool.last_task[wid] = (spec.suite, spec.task)
                attempts[spec.key] = attempts.get(spec.key, 0) + 1
                running[pool.handles[wid].run.remote(spec)] = (wid, spec, time.monotonic())
                event("episode_started", {"worker": wid, **pool.info[wid], **spec.to_dict()})
            if not running and not pool.idle:  # nothing runs: a worker must be on its way
                if pool.next_id > 2 * args.workers + len(todo) or (
                        pool.starting and time.monotonic() - pool.last_start > args.startup_timeout):
                    raise RuntimeError(f"no sim worker started within --startup-timeout {args.startup_timeout:g} s "
                                       "(cluster resources? see the Ray logs under /tmp/ray/session_latest/logs)")
                if not pool.starting:
                    pool.start()
            refs = list(running) + list(pool.starting)
            ready, _ = ray.wait(refs, num_returns=1, timeout=5.0)
            for ref in ready:
                if ref in pool.starting:
                    pool.started(ref)
                    continue
                wid, spec, t_start = running.pop(ref)
                try:
                    rec = ray.get(ref)
                    rec["attempt"] = attempts[spec.key]
                    if spec.key in retried_after:
                        rec["retried_after"] = retried_after[spec.key]
                    event("episode", rec)
                    pool.idle.append(wid)
                except RayTaskError as e:  # the episode raised: recorded, the worker lives on
                    event("episode", {**spec.to_dict(), "key": spec.key, "success": False, "worker": wid,
                                      "attempt": attempts[spec.key], "error": _short(e)})
                    pool.idle.append(wid)
                except RayActorError as e:  # the worker died (kill -9, out of memory, episode timeout)
                    dead = pool.remove(wid)
                    why = f"worker {wid} (pid {dead.get('pid')}, {dead.get('node')}) died: {_short(e)}"
                    faults["worker_deaths"].append({**dead, "episode": spec.key, "error": _short(e)})
                    event("worker_died", {**dead, "episode": spec.key, "error": why})
                    if attempts[spec.key] < 2:
                        retried_after[spec.key] = why
                        faults["retried_episodes"].append(spec.key)
                        pending.appendleft(spec)
                    else:
                        event("episode", {**spec.to_dict(), "key": spec.key, "success": False, "worker": wid,
                                          "attempt": attempts[spec.key], "retried_after": retried_after.get(spec.key),
                                          "error": f"{why} (second attempt)"})
                    if pending or running:
                        pool.start()
            now = time.monotonic()
            for ref, (wid, spec, t_start) in list(running.items()):
                if now - t_start > args.episode_timeout and wid in pool.handles and wid not in killed:
                    killed.add(wid)
                    ray.kill(pool.handles[wid], no_restart=True)  # surfaces as RayActorError above
        stats = []
        for server in servers:
            try:
                stats.append(ray.get(server.stats.remote(), timeout=60))
                server_pids.add(stats[-1]["pid"])
            except Exception as e:  # noqa: BLE001  (the report says why it has no server stats)
                stats.append({"error": _short(e)})
        return {"backend": "ray", "ray_address": args.ray, "workers": args.workers, "policy_servers": stats,
                "policy_server_pids": sorted(server_pids), "faults": faults, "cluster": _cluster_summary(ray)}
    finally:
        if not started_here:  # a cluster that outlives this run: its actors go now (their envs, the model)
            for handle in ([] if pool is None else list(pool.handles.values())) + servers:
                try:
                    ray.kill(handle, no_restart=True)
                except Exception:  # noqa: BLE001  (already dead)
                    pass
        remove_scratch(run_dir)  # this node's share; the workers' own are removed on their nodes when they die
        if started_here:
            ray.shutdown()


class _RaySimWorker(SimWorker):
    """SimWorker as a Ray actor: its info adds the Ray node and interpreter."""

    def info(self) -> dict:
        import ray
        return {**super().info(), "node_id": ray.get_runtime_context().get_node_id(), "python": sys.executable}


def _cluster_summary(ray) -> dict:
    try:
        have = ray.cluster_resources()
        return {"nodes": len([n for n in ray.nodes() if n.get("Alive")]), "cpus": have.get("CPU", 0),
                "gpus": have.get("GPU", 0)}
    except Exception:  # noqa: BLE001  (informational only)
        return {}


def _short(e: BaseException, limit: int = 600) -> str:
    text = f"{type(e).__name__}: {e}"
    return text if len(text) <= limit else text[:limit] + " ..."


# ---- the report ----------------------------------------------------------------------------

def wilson_interval(successes: int, n: int, z: float = 1.959964) -> list[float]:
    """95% Wilson score interval of a success rate (sound at 0/n and n/n, unlike the normal one)."""
    if n == 0:
        return [0.0, 1.0]
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def build_report(args, specs, records: list[dict], wall_s: float, new_episodes: int, extras: dict,
                 results: Path) -> dict:
    suites = list(dict.fromkeys(s.suite for s in specs))
    report = {
        "policy": args.policy, "suite": args.suite, "suites": suites, "mode": "lock_step",
        "workers": extras.get("workers", 1),
        "checkpoint": checkpoint_fingerprint(args.checkpoint) if args.policy == "vla" else None,
        "action_rows": None, "args": {k: v for k, v in vars(args).items()}, "versions": versions(),
        "wall_time_s": wall_s, "episodes": records,
    }
    if args.policy == "vla":
        report["action_rows"] = action_rows_report(argparse.Namespace(**{**vars(args), "suite": suites[0]}))
    summary = summarize(records)
    if len(suites) > 1:  # task keys per suite: LIBERO-10 and LIBERO-90 share scene names
        summary["per_task"] = {f"{suite}/{k}": v for suite in suites
                               for k, v in summarize([r for r in records if r["suite"] == suite])["per_task"].items()}
    report.update(summary)
    o = report["overall"]
    o["ci95"] = wilson_interval(o["successes"], o["episodes"])
    report["per_suite"] = {}
    for suite in suites:
        sel = [r for r in records if r["suite"] == suite]
        ok = sum(int(bool(r.get("success"))) for r in sel)
        report["per_suite"][suite] = {"episodes": len(sel), "successes": ok,
                                      "success_rate": ok / len(sel) if sel else 0.0,
                                      "ci95": wilson_interval(ok, len(sel)),
                                      "errors": sum(1 for r in sel if r.get("error"))}
    startup = extras.get("startup_s")
    steady = wall_s - startup if startup is not None else None
    report["throughput"] = {"episodes_this_run": new_episodes, "wall_time_s": wall_s, "startup_s": startup,
                            "episodes_per_hour": 3600.0 * new_episodes / wall_s if wall_s > 0 else 0.0,
                            # without the cluster and worker start-up: what a long run converges to
                            "episodes_per_hour_after_startup": 3600.0 * new_episodes / steady
                            if steady and steady > 0 else None,
                            "mean_episode_s": _mean([r.get("wall_s") for r in records]),
                            "mean_policy_steps": _mean([r.get("policy_steps") for r in records])}
    sizes = Counter(b for r in records for b in r.get("batch_sizes", []))
    report["policy_batch_sizes"] = {str(k): v for k, v in sorted(sizes.items())}
    servers = sorted({p for r in records for p in r.get("policy_servers", [])} |
                     set(extras.get("policy_server_pids", [])))
    faults = extras.get("faults", {"worker_deaths": [], "retried_episodes": []})
    faults["policy_server_pids"] = servers
    faults["policy_restarts"] = max(0, len(servers) - len(extras.get("policy_servers", [])))
    report["faults"] = faults
    cpu = [r["cpu_s"] / r["wall_s"] for r in records if r.get("wall_s") and r.get("cpu_s") is not None]
    report["utilisation"] = {"policy_servers": extras.get("policy_servers", []),
                             "sim_worker_cpu_fraction": _mean(cpu), "cluster": extras.get("cluster")}
    report["backend"] = extras.get("backend")
    report["ray_address"] = extras.get("ray_address")
    report["results_jsonl"] = str(Path(results).resolve())
    return report


def _mean(values) -> float | None:
    v = [float(x) for x in values if x is not None]
    return sum(v) / len(v) if v else None


def format_extra(report: dict) -> str:
    """The lines lightvla-sim-eval prints after the usual summary for a --ray run."""
    lines = []
    for suite, s in report["per_suite"].items():
        lo, hi = s["ci95"]
        lines.append(f"{suite}: {s['successes']}/{s['episodes']} = {s['success_rate']:.1%} "
                     f"(95% CI {lo:.1%}-{hi:.1%}), errors {s['errors']}")
    t = report["throughput"]
    lines.append(f"throughput: {t['episodes_per_hour']:.0f} episodes/hour ({t['episodes_this_run']} episodes in "
                 f"{t['wall_time_s']:.0f} s, {report['workers']} worker(s))")
    if report["policy_batch_sizes"]:
        lines.append("policy batch sizes: " + ", ".join(f"{k}: {v}" for k, v in report["policy_batch_sizes"].items()))
    for server in report["utilisation"]["policy_servers"]:
        if server.get("busy_fraction") is not None:
            lines.append(f"policy server ({server.get('device')}): busy {server['busy_fraction']:.0%} of "
                         f"{server['uptime_s']:.0f} s" + (f", GPU {server['gpu_utilisation_percent']:.0f}%"
                                                          if "gpu_utilisation_percent" in server else ""))
    f = report["faults"]
    if f["worker_deaths"] or f["policy_restarts"]:
        lines.append(f"faults: {len(f['worker_deaths'])} worker death(s), retried {f['retried_episodes']}, "
                     f"{f['policy_restarts']} policy server restart(s)")
    lines.append(f"results: {report['results_jsonl']}")
    return "\n".join(lines)
