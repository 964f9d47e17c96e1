"""A stand-in robot for the bag end-to-end test (a real process over DDS).

Publishes the instruction (latched), then streams each step at 10 Hz: joint states + eef pose,
then both camera images, all with the same fresh node-clock stamp; moves to the next step once an
ActionChunk for one of the step's stamps arrives. Writes every chunk it received to --out (JSON)
and prints "published N steps".

    python episode_publisher.py --steps 3 --subscribers 3 --out live.json [--sent-out sent.json]

Every tick of a step carries the same data (images, proprio) under a fresh stamp, so two chunks for
two ticks of one step come from the same observation; --sent-out tells which step a stamp belongs to.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.duration import Duration
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bagtools import CAMS, JOINTS, step_data  # noqa: E402

from lightvla_interfaces.msg import ActionChunk  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--subscribers", type=int, default=1, help="wait for this many subscribers per camera")
    ap.add_argument("--instruction", default="pick up the bowl")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sent-out", type=Path, help="write every published stamp (ns) -> its step here (JSON)")
    ap.add_argument("--timeout", type=float, default=60.0, help="s to wait for each chunk")
    ap.add_argument("--cameras-first", action="store_true",
                    help="publish a tick's cameras before its proprio (the node then pairs the previous proprio)")
    args = ap.parse_args()
    rclpy.init()
    node = rclpy.create_node("episode_publisher")
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pub_instr = node.create_publisher(String, "/instruction", latched)
    pub_cams = [node.create_publisher(Image, c, qos_profile_sensor_data) for c in CAMS]
    pub_joints = node.create_publisher(JointState, "/joint_states", qos_profile_sensor_data)
    pub_eef = node.create_publisher(PoseStamped, "/eef_pose", qos_profile_sensor_data)
    chunks: dict[int, ActionChunk] = {}
    node.create_subscription(ActionChunk, "/lightvla/action_chunk",
                             lambda m: chunks.__setitem__(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, m),
                             QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))

    def spin_until(pred, timeout):
        end = time.monotonic() + timeout
        while not pred() and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
        return pred()

    ok = spin_until(lambda: all(p.get_subscription_count() >= args.subscribers for p in pub_cams)
                    and pub_joints.get_subscription_count() >= 1, 30.0)
    if not ok:
        print("subscribers did not appear", flush=True)
        return 1
    # the latched instruction reaches every subscriber before the first observation: matched, then acked
    ok = spin_until(lambda: pub_instr.get_subscription_count() >= args.subscribers, 30.0)
    pub_instr.publish(String(data=args.instruction))
    if not ok or not pub_instr.wait_for_all_acked(Duration(seconds=30)):
        print("the instruction did not reach its subscribers", flush=True)
        return 1
    sent: dict[int, int] = {}                  # stamp ns -> step
    for k in range(args.steps):
        imgs, joints, pos, quat = step_data(k)
        deadline = time.monotonic() + args.timeout
        # stream step k at 10 Hz (fresh stamps, same data) until a chunk for one of its stamps comes
        while not any(sent.get(s) == k for s in chunks):
            if time.monotonic() > deadline:
                print(f"no chunk for step {k} in {args.timeout} s", flush=True)
                return 1
            stamp = node.get_clock().now().to_msg()
            sent[stamp.sec * 10**9 + stamp.nanosec] = k
            # cameras first: every tick's proprio differs, so which proprio an observation took matters
            moved = joints + (0.01 * (len(sent) % 2) if args.cameras_first else 0.0)
            js = JointState(name=JOINTS, position=[float(x) for x in moved])
            js.header.stamp = stamp
            eef = PoseStamped()
            eef.header.stamp, eef.header.frame_id = stamp, "base"
            eef.pose.position.x, eef.pose.position.y, eef.pose.position.z = (float(x) for x in pos)
            o = eef.pose.orientation
            o.x, o.y, o.z, o.w = (float(x) for x in quat)
            def proprio():
                pub_joints.publish(js)
                pub_eef.publish(eef)

            if not args.cameras_first:
                proprio()
                spin_until(lambda: False, 0.02)   # proprio first, as a robot streaming it would
            for pub, cam, img in zip(pub_cams, CAMS, imgs):
                m = Image(height=img.shape[0], width=img.shape[1], encoding="rgb8", step=img.shape[1] * 3)
                m.header.stamp, m.header.frame_id = stamp, cam
                m.data = img.tobytes()
                pub.publish(m)
            if args.cameras_first:
                spin_until(lambda: False, 0.02)
                proprio()
            spin_until(lambda: False, 0.08)
    spin_until(lambda: False, 3.0)             # chunks still in flight
    received = [{"stamp_ns": key, "step": sent.get(key), "kept": int(c.visual_tokens_kept),
                 "actions": np.asarray(c.actions, np.float32).reshape(c.chunk_size, c.action_dim).tolist()}
                for key, c in sorted(chunks.items())]
    spin_until(lambda: False, 1.0)             # let the recorders take the last messages
    args.out.write_text(json.dumps(received))
    if args.sent_out is not None:
        args.sent_out.write_text(json.dumps({str(s): k for s, k in sent.items()}))
    print(f"published {args.steps} steps", flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
