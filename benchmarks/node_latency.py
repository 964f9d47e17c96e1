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
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="lightvla_node_latency_"))
    ckpt = args.checkpoint
    if ckpt is None:
        from lightvla_ros.model.make_checkpoint import make_checkpoint

        ckpt = make_checkpoint(tmp / f"lightvla-{args.size}", size=args.size, seed=0)
    if not Path(ckpt).is_dir():
        print(f"checkpoint directory {ckpt} does not exist", file=sys.stderr)
        return 2
    runs = {
        "overhead (open_loop, 1 step, cameras 5 Hz)": ({"execution_mode": "open_loop", "open_loop_steps": 1}, 5.0),
        "jitter (temporal_ensemble, cameras 30 Hz)": ({"execution_mode": "temporal_ensemble"}, 30.0),
        "open_loop (8 steps, cameras 30 Hz)": ({"execution_mode": "open_loop"}, 30.0),
        "async (cameras 30 Hz)": ({"execution_mode": "async"}, 30.0),
    }
    # the model in a thread of the node (the old way) against the model in a child process (default)
    for name in list(runs)[:2]:
        params, rate = runs[name]
        runs[name.replace(" (", " [model in a thread] (")] = ({**params, "inference_process": False}, rate)
    results = {}
    for name, (params, cam_rate) in runs.items():
        t0 = time.monotonic()
        results[name] = r = run_node(Path(ckpt), tmp / name.split()[0], params, cam_rate, args.seconds, args.device)
        print(f"{name}: {json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()})} "
              f"({time.monotonic() - t0:.0f} s)", flush=True)
    ov = results["overhead (open_loop, 1 step, cameras 5 Hz)"]
    jt = results["jitter (temporal_ensemble, cameras 30 Hz)"]
    ol, asy = results["open_loop (8 steps, cameras 30 Hz)"], results["async (cameras 30 Hz)"]
    print("\nsummary (checkpoint %s, device %s, %g s per run)" % (Path(ckpt).name, args.device, args.seconds))
    print(f"  model inference            median {ov['model_ms_median']:.1f} ms, p99 {ov['model_ms_p99']:.1f} ms")
    ov_t = results["overhead [model in a thread] (open_loop, 1 step, cameras 5 Hz)"]
    jt_t = results["jitter [model in a thread] (temporal_ensemble, cameras 30 Hz)"]
    for label, o, j in (("model in a thread", ov_t, jt_t), ("model in a child process", ov, jt)):
        print(f"  {label:26s} overhead median {o['overhead_ms_median']:.1f} ms, p99 {o['overhead_ms_p99']:.1f} ms; "
              f"jitter p99 stamps {j['jitter_stamp_ms_p99']:.2f} ms, received {j['jitter_recv_ms_p99']:.2f} ms")
    ratio = ov_t['overhead_ms_median'] / max(ov['overhead_ms_median'], 1e-9)
    print(f"  ratio thread / process    overhead median {ratio:.1f}x, "
          f"jitter p99 {jt_t['jitter_stamp_ms_p99'] / max(jt['jitter_stamp_ms_p99'], 1e-9):.1f}x")
    print(f"  node overhead              median {ov['overhead_ms_median']:.1f} ms, p99 {ov['overhead_ms_p99']:.1f} ms "
          f"({ov['overhead_samples']} chunks)")
    print(f"  step jitter @20 Hz, stamps p50 {jt['jitter_stamp_ms_p50']:.2f} ms, "
          f"p99 {jt['jitter_stamp_ms_p99']:.2f} ms; "
          f"received p50 {jt['jitter_recv_ms_p50']:.2f} ms, p99 {jt['jitter_recv_ms_p99']:.2f} ms")
    for name, r in (("open_loop", ol), ("async", asy)):
        print(f"  {name:10s} pauses {r['pauses']:3d}, missed steps {r['missed_steps']:3d}, receive gaps "
              f"{r['recv_gaps']:3d}, {r['action_rate_hz']:.1f} actions/s, model {r['model_ms_median']:.0f} ms")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
