"""The policy node under a steady stream for minutes, with ordinary consumers in the domain.

    .venv/bin/python benchmarks/steady_stream.py [--duration 600] [--checkpoint DIR] [--mode async]

Starts the policy node (CPU, fp32) and a downstream consumer process (subscribers to the chunk,
action and diagnostics topics, clients of the node's services) on a private loopback DDS domain,
publishes two cameras at 30 Hz and joint states + eef pose at 100 Hz from this process, and prints
one line per window: actions/s, the node's step rate and longest gap between step callbacks
(from /diagnostics), the observation age of arriving chunks, the node's RSS. Ends with the totals.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

CONSUMER = """
import rclpy
from rclpy.node import Node
from diagnostic_msgs.msg import DiagnosticArray
from lightvla_interfaces.msg import ActionChunk
from lightvla_interfaces.srv import SetInstruction
from std_srvs.srv import Trigger
rclpy.init()
n = Node("downstream_consumer")
for topic in ("/lightvla/action_chunk", "/lightvla/action"):
    n.create_subscription(ActionChunk, topic, lambda m: None, 10)
n.create_subscription(DiagnosticArray, "/diagnostics", lambda m: None, 10)
clients = [n.create_client(SetInstruction, "/lightvla_policy/set_instruction"),
           n.create_client(Trigger, "/lightvla_policy/reset")]
print("consumer up", flush=True)
try:
    rclpy.spin(n)
except BaseException:
    pass
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of streaming")
    ap.add_argument("--window", type=float, default=60.0, help="seconds per printed line")
    ap.add_argument("--checkpoint", default=str(REPO / "data" / "checkpoints" / "lightvla-tiny"))
    ap.add_argument("--mode", default="async", help="execution_mode")
    ap.add_argument("--rate", type=float, default=20.0, help="control_rate_hz")
    args = ap.parse_args()

    from builtin_interfaces.msg import Time as TimeMsg
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseStamped
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState

    from lightvla_interfaces.msg import ActionChunk
    from lightvla_ros.ros.launcher import ros_domain

    def stamp(ns: int) -> TimeMsg:
        return TimeMsg(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

    with ros_domain() as dom:
        node = dom.start_node("lightvla-policy", params_file=REPO / "config" / "policy.yaml", name="lightvla_policy",
                              params={"checkpoint": args.checkpoint, "device": "cpu", "dtype": "float32",
                                      "execution_mode": args.mode, "control_rate_hz": args.rate,
                                      "instruction": "put the bowl on the plate", "diagnostics_period": 1.0,
                                      "proprio_sources": ["eef_pos", "eef_axis_angle", "joint:finger_l",
                                                          "joint:finger_r"]})
        node.wait_for_log_line("policy ready", timeout=300)
        consumer = dom.start_process([sys.executable, "-c", CONSUMER], name="consumer")
        consumer.wait_for_log_line("consumer up", timeout=60)
        with dom.rclpy_node("steady_stream_peer") as probe:
            n = probe.node
            cams = [n.create_publisher(Image, f"/camera/{c}/image_raw", qos_profile_sensor_data)
                    for c in ("agentview", "wrist")]
            js_pub = n.create_publisher(JointState, "/joint_states", qos_profile_sensor_data)
            eef_pub = n.create_publisher(PoseStamped, "/eef_pose", qos_profile_sensor_data)
            actions: list[float] = []
            chunk_ages: list[tuple[float, float]] = []
            diags: list[tuple[float, dict]] = []
            n.create_subscription(ActionChunk, "/lightvla/action", lambda m: actions.append(time.monotonic()), 50)

            def on_chunk(m):
                chunk_ages.append((time.monotonic(), n.get_clock().now().nanoseconds * 1e-9
                                   - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9)))
            n.create_subscription(ActionChunk, "/lightvla/action_chunk", on_chunk, 50)
            n.create_subscription(DiagnosticArray, "/diagnostics", lambda a: diags.append(
                (time.monotonic(), {kv.key: kv.value for st in a.status for kv in st.values})), 50)
            probe.wait_for_topic("/lightvla/action", timeout=30)
            img = Image(height=32, width=32, encoding="rgb8", step=96,
                        data=np.random.default_rng(0).integers(0, 255, 32 * 32 * 3, dtype=np.uint8).tobytes())
            js = JointState(name=["finger_l", "finger_r"], position=[0.04, -0.04])
            eef = PoseStamped()
            eef.pose.orientation.w = 1.0
            start = time.monotonic()
            next_cam = next_prop = next_line = start
            print(f"# {args.duration:.0f} s, mode {args.mode}, {args.rate:g} Hz; cameras 2 x 30 Hz, proprio 100 Hz")
            print("window_end_s  actions_per_s  step_rate_hz(min/med)  step_gap_max_s  chunk_age_med_s  node_rss_mb")
            totals = []
            while (now := time.monotonic()) < start + args.duration:
                if now >= next_cam:
                    img.header.stamp = stamp(n.get_clock().now().nanoseconds)
                    for p in cams:
                        p.publish(img)
                    next_cam += 1 / 30
                if now >= next_prop:
                    js.header.stamp = eef.header.stamp = stamp(n.get_clock().now().nanoseconds)
                    js_pub.publish(js)
                    eef_pub.publish(eef)
                    next_prop += 1 / 100
                if now >= next_line + args.window:
                    a = [t for t in actions if next_line <= t < now]
                    d = [v for t, v in diags if next_line <= t < now and "step_rate_hz" in v]
                    rates = [float(v["step_rate_hz"]) for v in d] or [0.0]
                    gaps = [float(v["step_gap_max_s"]) for v in d] or [float("nan")]
                    ages = [g for t, g in chunk_ages if next_line <= t < now] or [float("nan")]
                    totals.append(len(a) / (now - next_line))
                    print(f"{now - start:12.0f}  {totals[-1]:13.1f}  {min(rates):10.1f}/{np.median(rates):<10.1f}  "
                          f"{max(gaps):14.3f}  {np.median(ages):15.3f}  {rss_mb(node.popen.pid):11.0f}", flush=True)
                    next_line = now
                probe.executor.spin_once(timeout_sec=max(0.0, min(next_cam, next_prop) - time.monotonic()))
        consumer.stop()
        code = node.stop()
        print(f"# actions/s per window: min {min(totals):.1f}, median {np.median(totals):.1f} "
              f"(control rate {args.rate:g}); node exit code {code}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
