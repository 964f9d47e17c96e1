"""Policy node timing over real DDS (loopback, private domain): node overhead, step jitter, pauses.

    .venv/bin/python benchmarks/node_latency.py [--size tiny|small | --checkpoint DIR] [--seconds 8]

Runs the policy node as a process (lightvla-policy) and an in-process rclpy peer that publishes two
cameras + joint states + eef pose and records what comes back. Reports:
1. node overhead: camera message published -> ActionChunk received, minus the model's own
   inference time (ActionChunk.inference_latency); open_loop with 1 step per chunk and cameras at
   5 Hz, so every inference starts on a camera message's arrival. Median and p99.
2. per-step publish jitter at 20 Hz while inference runs continuously (temporal_ensemble asks for a
   chunk whenever the model is free): |interval - 50 ms| of consecutive /lightvla/action messages,
   from the node's step stamps and from the receive times, p50 / p99.
3. boundary pauses, open_loop vs async (cameras at 30 Hz): runs of control steps with nothing to
   execute (node diagnostics), and receive-side gaps longer than 1.5 periods.
4. the floor under 1.: the same peer and messages against a bare rclpy echo process that answers
   each complete observation (2 images, joint states, eef pose) with an empty ActionChunk, spun by a
   SingleThreadedExecutor and by the EventsExecutor: DDS both ways plus rclpy's own dispatch. And
   what the model in a child process adds at least: a bare round trip of a small message through a
   socket pair to a child process and back (two process wake-ups), every 200 ms as in 1.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

RATE = 20.0
PERIOD = 1.0 / RATE


def pct(values, q) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


def echo_main(kind: str) -> int:
    """The floor's other end (a process): ActionChunk back once all four parts of a stamp arrived."""
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image, JointState

    from lightvla_interfaces.msg import ActionChunk
    from lightvla_ros.ros.conversions import time_to_ns
    from lightvla_ros.ros.peer import CAMERAS
    from lightvla_ros.ros.qos import RELIABLE, SENSOR
    from lightvla_ros.ros.spin import one_thread_executor

    rclpy.init()
    node = rclpy.create_node("latency_echo")
    seen: dict[int, int] = {}
    pub = node.create_publisher(ActionChunk, "/lightvla/action_chunk", RELIABLE)

    def on_message(msg) -> None:
        stamp = time_to_ns(msg.header)
        seen[stamp] = seen.get(stamp, 0) + 1
        if seen[stamp] == len(CAMERAS) + 2:
            del seen[stamp]
            pub.publish(ActionChunk(header=msg.header))

    for topic in CAMERAS.values():
        node.create_subscription(Image, topic, on_message, SENSOR)
    node.create_subscription(JointState, "/joint_states", on_message, SENSOR)
    node.create_subscription(PoseStamped, "/eef_pose", on_message, SENSOR)
    executor = SingleThreadedExecutor() if kind == "single" else one_thread_executor()
    executor.add_node(node)
    print(f"echo ready ({type(executor).__name__})", flush=True)
    try:
        while rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except KeyboardInterrupt:
        pass
    return 0


def run_floor(log_dir: Path, kind: str, seconds: float) -> dict:
    from lightvla_ros.ros.launcher import ros_domain
    from lightvla_ros.ros.peer import PolicyDriver
    from lightvla_ros.ros.conversions import time_to_ns

    with ros_domain(log_dir=log_dir) as dom:
        proc = dom.start_process([sys.executable, __file__, "--echo", kind], name=f"echo_{kind}")
        proc.wait_for_log_line(r"echo ready", timeout=60)
        with dom.rclpy_node("bench_peer") as probe:
            drv = PolicyDriver(probe, size=224)
            probe.wait_for_topic("/lightvla/action_chunk", timeout=30)
            published, chunks = drv.measure(seconds, rate=5.0, settle=0.3)
        proc.stop()
    rtt = [recv - published[time_to_ns(m.header.stamp)] for recv, m in chunks
           if time_to_ns(m.header.stamp) in published]
    return {"round_trip_ms_median": pct(rtt, 50) * 1e3, "round_trip_ms_p99": pct(rtt, 99) * 1e3,
            "samples": len(rtt)}


def pipe_round_trip(count: int = 60, gap: float = 0.2) -> dict:
    """A few bytes to a child process over a socket pair and back, `count` times, `gap` s apart."""
    import socket
    import subprocess
    from multiprocessing.connection import Connection

    parent, child = socket.socketpair()
    code = ("import sys; from multiprocessing.connection import Connection as C; c = C(int(sys.argv[1]))\n"
            "while True:\n    try: c.send_bytes(c.recv_bytes())\n    except EOFError: break")
    proc = subprocess.Popen([sys.executable, "-c", code, str(child.fileno())], pass_fds=[child.fileno()])
    child.close()
    conn = Connection(parent.detach())
    rtt = []
    try:
        for _ in range(count + 5):
            time.sleep(gap)
            t0 = time.perf_counter()
            conn.send_bytes(b"x" * 64)
            conn.recv_bytes()
            rtt.append(time.perf_counter() - t0)
    finally:
        conn.close()
        proc.wait(5)
    rtt = rtt[5:]
    return {"round_trip_ms_median": pct(rtt, 50) * 1e3, "round_trip_ms_p99": pct(rtt, 99) * 1e3, "samples": len(rtt)}


def run_node(ckpt: Path, log_dir: Path, params: dict, camera_rate: float, seconds: float, device: str) -> dict:
    from lightvla_ros.ros.launcher import ros_domain
    from lightvla_ros.ros.peer import PolicyDriver, stamp_key, to_sec, to_time

    with ros_domain(log_dir=log_dir) as dom:
        proc = dom.start_node(
            "lightvla-policy", params_file=REPO / "config" / "policy.yaml", name="lightvla_policy",
            params={"checkpoint": str(ckpt), "device": device, "control_rate_hz": RATE,
                    "proprio_sources": ["eef_pos", "eef_axis_angle", "joint:finger_l", "joint:finger_r"],
                    "instruction": "put the bowl on the plate", "diagnostics_period": 0.5, **params})
        proc.wait_for_log_line(r"policy ready", timeout=300)
        with dom.rclpy_node("bench_peer") as probe:
            drv = PolicyDriver(probe, size=224)
            probe.wait_for_topic("/lightvla/action", timeout=30)
            drv.stream(1.5, rate=camera_rate)                  # warm-up, not measured
            n_chunks, n_actions, n_pub = len(drv.chunks), len(drv.actions), len(drv.published)
            d0 = drv.diagnostics()
            drv.stream(seconds, rate=camera_rate)
            drv.spin(0.6)
            d1 = drv.diagnostics()
        proc.stop()
    published = {stamp_key(to_time(s)): wall for s, wall in drv.published[n_pub:]}
    overhead, model = [], []
    for recv, msg in drv.chunks[n_chunks:]:
        wall = published.get(stamp_key(msg.header.stamp))
        model.append(msg.inference_latency)
        if wall is not None:
            overhead.append(recv - wall - msg.inference_latency)
    acts = drv.actions[n_actions:]
    stamps = np.array([to_sec(m.header.stamp) for _, m in acts])
    recvs = np.array([t for t, _ in acts])

    def jitter(times):
        dt = np.diff(times)
        regular = dt[dt < 1.5 * PERIOD]
        return np.abs(regular - PERIOD) * 1e3, int(np.sum(dt >= 1.5 * PERIOD))

    j_stamp, gaps = jitter(stamps)
    j_recv, _ = jitter(recvs)
    delta = lambda k: int(d1.get(k, 0)) - int(d0.get(k, 0))  # noqa: E731
    return {
        "chunks": len(drv.chunks) - n_chunks,
        "actions": len(acts),
        "action_rate_hz": len(acts) / seconds,
        "model_ms_median": pct(model, 50) * 1e3,
        "model_ms_p99": pct(model, 99) * 1e3,
        "overhead_ms_median": pct(overhead, 50) * 1e3,
        "overhead_ms_p99": pct(overhead, 99) * 1e3,
        "overhead_samples": len(overhead),
        "jitter_stamp_ms_p50": pct(j_stamp, 50), "jitter_stamp_ms_p99": pct(j_stamp, 99),
        "jitter_recv_ms_p50": pct(j_recv, 50), "jitter_recv_ms_p99": pct(j_recv, 99),
        "pauses": delta("pauses"), "missed_steps": delta("missed_steps"), "recv_gaps": gaps,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, help="checkpoint directory (default: generate one)")
    ap.add_argument("--size", default="tiny", help="size of the generated checkpoint: tiny | small")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seconds", type=float, default=8.0, help="measured seconds per run")
    ap.add_argument("--json", type=Path, help="write the results here as JSON")
    ap.add_argument("--only", choices=("overhead", "floor"), help="only the overhead runs (both ways) / the floor")
    ap.add_argument("--echo", choices=("single", "events"), help=argparse.SUPPRESS)   # the floor's echo process
    args = ap.parse_args(argv)
    if args.echo:
        return echo_main(args.echo)

    tmp = Path(tempfile.mkdtemp(prefix="lightvla_node_latency_"))
    ckpt = args.checkpoint
    if ckpt is None and args.only != "floor":
        from lightvla_ros.model.make_checkpoint import make_checkpoint

        ckpt = make_checkpoint(tmp / f"lightvla-{args.size}", size=args.size, seed=0)
    if ckpt is not None and not Path(ckpt).is_dir():
        print(f"checkpoint directory {ckpt} does not exist", file=sys.stderr)
        return 2
    overhead = "overhead (open_loop, 1 step, cameras 5 Hz)"
    runs = {
        overhead: ({"execution_mode": "open_loop", "open_loop_steps": 1}, 5.0),
        "jitter (temporal_ensemble, cameras 30 Hz)": ({"execution_mode": "temporal_ensemble"}, 30.0),
        "open_loop (8 steps, cameras 30 Hz)": ({"execution_mode": "open_loop"}, 30.0),
        "async (cameras 30 Hz)": ({"execution_mode": "async"}, 30.0),
    }
    # the model in a thread of the node (the old way) against the model in a child process (default)
    for name in list(runs)[:2]:
        params, rate = runs[name]
        runs[name.replace(" (", " [model in a thread] (")] = ({**params, "inference_process": False}, rate)
    if args.only:
        runs = {k: v for k, v in runs.items() if k.startswith("overhead")} if args.only == "overhead" else {}
    results = {}
    for name, (params, cam_rate) in runs.items():
        t0 = time.monotonic()
        results[name] = r = run_node(Path(ckpt), tmp / name.split()[0], params, cam_rate, args.seconds, args.device)
        print(f"{name}: {json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()})} "
              f"({time.monotonic() - t0:.0f} s)", flush=True)
    if args.only in (None, "floor"):
        for kind in ("single", "events"):
            name = f"floor ({kind}: rclpy echo, same peer and messages)"
            results[name] = r = run_floor(tmp / f"floor_{kind}", kind, args.seconds)
            print(f"{name}: {json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()})}",
                  flush=True)
        results["pipe (socket pair to a child process and back)"] = r = pipe_round_trip()
        print(f"pipe: {json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()})}", flush=True)
    print("\nsummary (checkpoint %s, device %s, %g s per run)" % (ckpt and Path(ckpt).name, args.device, args.seconds))
    if overhead in results:
        ov = results[overhead]
        ov_t = results["overhead [model in a thread] (open_loop, 1 step, cameras 5 Hz)"]
        print(f"  model inference            median {ov['model_ms_median']:.1f} ms, p99 {ov['model_ms_p99']:.1f} ms")
        for label, o in (("model in a thread", ov_t), ("model in a child process", ov)):
            print(f"  {label:26s} overhead median {o['overhead_ms_median']:.1f} ms, p99 {o['overhead_ms_p99']:.1f} ms "
                  f"({o['overhead_samples']} chunks)")
    if "jitter (temporal_ensemble, cameras 30 Hz)" in results:
        jitter = "jitter (temporal_ensemble, cameras 30 Hz)"
        for label, j in (("model in a thread", results[jitter.replace(" (", " [model in a thread] (")]),
                         ("model in a child process", results[jitter])):
            print(f"  {label:26s} step jitter @20 Hz p99: stamps {j['jitter_stamp_ms_p99']:.2f} ms, "
                  f"received {j['jitter_recv_ms_p99']:.2f} ms")
        for name, r in (("open_loop", results["open_loop (8 steps, cameras 30 Hz)"]),
                        ("async", results["async (cameras 30 Hz)"])):
            print(f"  {name:10s} pauses {r['pauses']:3d}, missed steps {r['missed_steps']:3d}, receive gaps "
                  f"{r['recv_gaps']:3d}, {r['action_rate_hz']:.1f} actions/s, model {r['model_ms_median']:.0f} ms")
    for kind in ("single", "events"):
        r = results.get(f"floor ({kind}: rclpy echo, same peer and messages)")
        if r:
            print(f"  floor, echo on {kind:6s}     round trip median {r['round_trip_ms_median']:.2f} ms, "
                  f"p99 {r['round_trip_ms_p99']:.2f} ms ({r['samples']} observations)")
    r = results.get("pipe (socket pair to a child process and back)")
    if r:
        print(f"  pipe to a child and back    round trip median {r['round_trip_ms_median']:.2f} ms, "
              f"p99 {r['round_trip_ms_p99']:.2f} ms")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
