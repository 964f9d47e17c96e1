"""Where the policy node's overhead goes: camera message -> ActionChunk, stage by stage (profiling).

    .venv/bin/python benchmarks/node_stages.py [--checkpoint DIR] [--seconds 8] [--thread]

The same set-up as benchmarks/node_latency.py's overhead run (open_loop, 1 step per chunk, two 224 px
cameras at 5 Hz, loopback DDS), but the node runs with wall-clock marks wrapped around its stages
(this file run with --node: PolicyNode's callbacks, the runner's request and result, the model
process's pipe; with the model in a child process, the child is this file run with --child and
marks its receive, its infer() and its send). Marks are time.time(), comparable across the three
processes. Prints the median and 90th percentile of each stage over the measured observations;
the stages overlap where noted (the callbacks run while later messages are still arriving).
Profiling only: it wraps private methods, so it follows the node's code, not its interface.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHILD_TIMINGS = ("c_recv", "c_infer_start", "c_infer_end", "c_send")


# ---- the traced node (--node) -----------------------------------------------------------------

def traced_node() -> int:
    from lightvla_ros.nodes import policy_node as pn
    from lightvla_ros.policy import process_policy as pp
    from lightvla_ros.policy import runner as rn
    from lightvla_ros.ros.conversions import time_to_ns

    out = open(os.environ["NODE_STAGES_OUT"], "a", buffering=1)
    marks: dict[int, dict[str, float]] = {}

    def mark(stamp: int, key: str, t: float | None = None) -> None:
        marks.setdefault(stamp, {}).setdefault(key, time.time() if t is None else t)

    def around(cls, name: str, key, first: bool = True):
        """Wrap cls.name: mark key(args) before (and key_end after) the call."""
        orig = getattr(cls, name)

        def wrapper(self, *args):
            stamp, label = key(*args)
            mark(stamp, label)
            value = orig(self, *args)
            mark(stamp, label + "_end")
            return value
        setattr(cls, name, wrapper)

    around(pn.PolicyNode, "_on_image", lambda camera, msg, decode: (time_to_ns(msg.header), f"cb_{camera}"))
    around(pn.PolicyNode, "_on_joint_state", lambda msg: (time_to_ns(msg.header), "cb_joint_states"))
    around(pn.PolicyNode, "_on_eef_pose", lambda msg: (time_to_ns(msg.header), "cb_eef_pose"))

    wait_request = rn.ChunkedPolicyRunner.wait_request

    def mark_taken(req):
        if req is not None:
            mark(req.obs.stamp, "worker_got")
            mark(req.obs.stamp, "requested", time.time() - (time.monotonic() - req.wall_start))

    def traced_wait(self, timeout, busy=None):   # model in a thread: the worker takes the request
        req = wait_request(self, timeout, busy)
        mark_taken(req)
        return req
    rn.ChunkedPolicyRunner.wait_request = traced_wait
    send = rn.InferenceWorker._send

    def traced_send(self, req):   # model in a process: sent on the thread that made the request
        mark_taken(req)
        return send(self, req)
    rn.InferenceWorker._send = traced_send

    on_result = rn.ChunkedPolicyRunner.on_result

    def traced_result(self, req, result, now):
        mark(req.obs.stamp, "infer_returned")
        mark(req.obs.stamp, "model_s", result.timings.get("total", 0.0))
        for k in CHILD_TIMINGS:
            if k in result.timings:
                mark(req.obs.stamp, k, result.timings.pop(k))
        value = on_result(self, req, result, now)
        mark(req.obs.stamp, "on_result_end")
        return value
    rn.ChunkedPolicyRunner.on_result = traced_result

    publish = pn.PolicyNode._publish_result

    def traced_publish(self, result):
        stamp = result.chunk.stamp
        mark(stamp, "publish_start")
        publish(self, result)
        out.write(json.dumps({"stamp": stamp, **marks.pop(stamp, {})}) + "\n")
    pn.PolicyNode._publish_result = traced_publish

    call = pp.ProcessPolicy._call

    def traced_call(self, kind, payload):
        if kind == "infer":
            mark(payload.stamp, "send_start")
        value = call(self, kind, payload)
        if kind == "infer":
            mark(payload.stamp, "recv_end")
        return value
    pp.ProcessPolicy._call = traced_call
    submit, receive = pp.ProcessPolicy.submit, pp.ProcessPolicy.receive

    def traced_submit(self, obs):
        mark(obs.stamp, "send_start")
        return submit(self, obs)

    def traced_receive(self, timeout):
        value = receive(self, timeout)
        if value is not None:
            mark(value.stamp, "recv_end")
        return value
    pp.ProcessPolicy.submit, pp.ProcessPolicy.receive = traced_submit, traced_receive
    popen = pp.subprocess.Popen

    def child_popen(argv, **kwargs):   # the model process: this file with --child
        argv = list(argv)
        if argv[1:3] == ["-m", pp.__name__]:
            argv[1:3] = [__file__, "--child"]
        return popen(argv, **kwargs)
    pp.subprocess.Popen = child_popen
    return pn.main()


# ---- the traced model process (--child FD CHECKPOINT KWARGS IMAGES_FD) --------------------------

def traced_child(argv: list[str]) -> None:
    from multiprocessing.connection import Connection

    from lightvla_ros.policy import process_policy as pp
    from lightvla_ros.policy import vla_policy as vp

    infer = vp.VLAPolicy.infer
    received = [0.0]

    def traced_infer(self, obs):
        t0 = time.time()
        result = infer(self, obs)
        result.timings.update(c_recv=received[0], c_infer_start=t0, c_infer_end=time.time())
        return result
    vp.VLAPolicy.infer = traced_infer

    class TracedConnection(Connection):
        def recv(self):
            value = super().recv()
            received[0] = time.time()
            return value

        def send(self, obj):
            if isinstance(obj, tuple) and obj[0] == "ok" and hasattr(obj[1], "timings"):
                obj[1].timings["c_send"] = time.time()
            super().send(obj)

    pp._serve(TracedConnection(int(argv[0])), argv[1], json.loads(argv[2]), pp.ImageBuffer(int(argv[3])))


# ---- the driver --------------------------------------------------------------------------------

STAGES = [  # (label, start mark, end mark); None: a computed stage
    ("peer published -> first callback starts (the images still arriving)", "published", "first_cb"),
    ("peer published -> last callback starts", "published", "last_cb"),
    ("callbacks, first start -> last end", "first_cb", "last_cb_end"),
    ("  each image callback (decode, runner.add_image)", None, None),
    ("request made -> worker thread has it (process: the send starts)", "requested", "worker_got"),
    ("worker -> request sent to the model process", "worker_got", "send_start"),
    ("  sent -> child has it (images via the memfd)", "send_start", "c_recv"),
    ("  child has it -> its infer() starts", "c_recv", "c_infer_start"),
    ("  child infer() minus the model's own time", None, None),
    ("  child infer() returned -> reply sent", "c_infer_end", "c_send"),
    ("  reply sent -> worker has it", "c_send", "recv_end"),
    ("model call minus the model's own time (thread: infer(); process: the whole round trip)", None, None),
    ("runner.on_result (chunk rules, scheduler)", "infer_returned", "on_result_end"),
    ("on_result -> publish starts", "on_result_end", "publish_start"),
    ("publish starts -> peer has the ActionChunk", "publish_start", "received"),
    ("node overhead (received - published - model time)", None, None),
]


def stages(rows: list[dict]) -> dict[str, list[float]]:
    got: dict[str, list[float]] = {label: [] for label, _, _ in STAGES}
    for r in rows:
        cbs = [k for k in r if k.startswith("cb_") and not k.endswith("_end")]
        r["first_cb"] = min(r[k] for k in cbs)
        r["last_cb"] = max(r[k] for k in cbs)
        r["last_cb_end"] = max(r[k + "_end"] for k in cbs)
        for label, a, b in STAGES:
            if a is not None and a in r and b in r:
                got[label].append(r[b] - r[a])
        got["  each image callback (decode, runner.add_image)"] += [r[k + "_end"] - r[k] for k in cbs
                                                                    if k.startswith("cb_") and "joint" not in k
                                                                    and "eef" not in k]
        if "c_infer_start" in r:
            inside = r["c_infer_end"] - r["c_infer_start"]
            got["  child infer() minus the model's own time"].append(inside - r["model_s"])
            call = r["recv_end"] - r["send_start"]
        else:
            call = r["infer_returned"] - r["worker_got"]
        got["model call minus the model's own time (thread: infer(); process: the whole round trip)"].append(
            call - r["model_s"])
        got["node overhead (received - published - model time)"].append(r["received"] - r["published"] - r["model_s"])
    return {k: v for k, v in got.items() if v}


def run(ckpt: Path, seconds: float, inference_process: bool, log_dir: Path) -> dict[str, list[float]]:
    from lightvla_ros.ros.conversions import time_to_ns
    from lightvla_ros.ros.launcher import ros_args, ros_domain
    from lightvla_ros.ros.peer import PolicyDriver

    out = log_dir / "stages.jsonl"
    params = {"checkpoint": str(ckpt), "device": "cpu", "control_rate_hz": 20.0,
              "proprio_sources": ["eef_pos", "eef_axis_angle", "joint:finger_l", "joint:finger_r"],
              "instruction": "put the bowl on the plate", "diagnostics_period": 0.5,
              "execution_mode": "open_loop", "open_loop_steps": 1, "inference_process": inference_process}
    with ros_domain(log_dir=log_dir) as dom:
        argv = [sys.executable, __file__, "--node",
                *ros_args(params, REPO / "config" / "policy.yaml", name="lightvla_policy")]
        proc = dom.start_process(argv, name="traced_policy", env={"NODE_STAGES_OUT": str(out)}, cwd=REPO)
        proc.wait_for_log_line(r"policy ready", timeout=300)
        with dom.rclpy_node("stages_peer") as probe:
            drv = PolicyDriver(probe, size=224)
            probe.wait_for_topic("/lightvla/action", timeout=30)
            published, chunks = drv.measure(seconds, rate=5.0, settle=0.6)
        proc.stop()
    received = {time_to_ns(m.header.stamp): recv for recv, m in chunks}
    rows = []
    for line in out.read_text().splitlines():
        r = json.loads(line)
        if r["stamp"] in published and r["stamp"] in received:
            rows.append({**r, "published": published[r["stamp"]], "received": received[r["stamp"]]})
    return stages(rows)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--node"]:
        sys.argv = [sys.argv[0], *argv[1:]]
        return traced_node()
    if argv[:1] == ["--child"]:
        traced_child(argv[1:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, help="checkpoint directory (default: generate a tiny one)")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--thread", action="store_true", help="the model in a thread of the node (default: a process)")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="lightvla_node_stages_"))
    ckpt = args.checkpoint
    if ckpt is None:
        from lightvla_ros.model.make_checkpoint import make_checkpoint

        ckpt = make_checkpoint(tmp / "lightvla-tiny", size="tiny", seed=0)
    got = run(Path(ckpt), args.seconds, not args.thread, tmp)
    n = len(next(iter(got.values()), []))
    print(f"model in a {'thread' if args.thread else 'child process'}, {n} observations; ms, median / p90")
    for label, values in got.items():
        v = np.asarray(values) * 1e3
        print(f"  {label:88s} {np.median(v):7.3f} {np.percentile(v, 90):7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
