"""A synthetic robot for the policy node: an rclpy peer that publishes cameras, joint states, eef
pose and instruction (good, or broken on purpose) and records what the node publishes, with
receive times. The node tests and benchmarks/node_latency.py drive the node with it; on a new
robot it checks a node's wiring before the real sensors are connected."""
from __future__ import annotations

import time

import numpy as np
from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String

from lightvla_interfaces.msg import ActionChunk, PruningStats
from lightvla_ros.policy.clock import to_ns
from lightvla_ros.ros.conversions import ns_to_time, time_to_ns
from lightvla_ros.ros.qos import LATCHED, RECORD, SENSOR

CAMERAS = {"agentview": "/camera/agentview/image_raw", "wrist": "/camera/wrist/image_raw"}
FINGERS = ["finger_l", "finger_r"]


def to_time(t: float) -> TimeMsg:
    """Seconds (a test's or a benchmark's clock) -> builtin_interfaces/Time."""
    return ns_to_time(to_ns(t))


def to_sec(t: TimeMsg) -> float:
    return time_to_ns(t) / 1e9


def stamp_key(t: TimeMsg) -> tuple[int, int]:
    return (int(t.sec), int(t.nanosec))


class PolicyDriver:
    """Publishes camera images, joint states, eef pose and the instruction; records the outputs."""

    def __init__(self, probe, size: int = 32):
        self.probe, self.node = probe, probe.node
        self.size = size
        n = self.node
        self.img_pubs = {c: n.create_publisher(Image, t, SENSOR) for c, t in CAMERAS.items()}
        self.cmp_pubs = {c: n.create_publisher(CompressedImage, t + "/compressed", SENSOR)
                         for c, t in CAMERAS.items()}
        self.js_pub = n.create_publisher(JointState, "/joint_states", SENSOR)
        self.eef_pub = n.create_publisher(PoseStamped, "/eef_pose", SENSOR)
        self.instr_pub = n.create_publisher(String, "/instruction", LATCHED)
        self.chunks: list[tuple[float, ActionChunk]] = []
        self.actions: list[tuple[float, ActionChunk]] = []
        self.stats: list[tuple[float, PruningStats]] = []
        self.diags: list[tuple[float, DiagnosticArray]] = []
        self.published: list[tuple[float, float]] = []   # (stamp, wall time of publishing)
        n.create_subscription(ActionChunk, "/lightvla/action_chunk",
                              lambda m: self.chunks.append((time.time(), m)), RECORD)
        n.create_subscription(ActionChunk, "/lightvla/action", lambda m: self.actions.append((time.time(), m)), RECORD)
        n.create_subscription(PruningStats, "/lightvla/pruning_stats",
                              lambda m: self.stats.append((time.time(), m)), RECORD)
        n.create_subscription(DiagnosticArray, "/diagnostics", lambda m: self.diags.append((time.time(), m)), RECORD)
        rng = np.random.default_rng(0)
        self.image = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    # ---- one observation, optionally broken in one way ----
    def image_msg(self, stamp: float, encoding: str = "rgb8") -> Image:
        m = Image()
        m.header.stamp = to_time(stamp)
        m.height = m.width = self.size
        m.encoding = encoding
        arr = self.image if encoding != "mono8" else self.image[:, :, 0]
        m.step = self.size * (1 if encoding == "mono8" else 3)
        m.data = np.ascontiguousarray(arr).tobytes()
        return m

    def publish(self, stamp: float | None = None, kind: str | None = None, camera_offset: float = 0.0,
                eef_offset: float = 0.0, cameras: bool = True, proprio: bool = True) -> float:
        """Publish one full observation; `kind` breaks one part of it (see the branches);
        camera_offset / eef_offset shift those stamps; cameras / proprio=False leave them out."""
        stamp = self.now() if stamp is None else stamp
        cams = list(CAMERAS) if cameras else []
        for i, cam in enumerate(cams):
            if kind == "missing_camera" and cam == "wrist":
                continue
            cam_stamp = (stamp - 0.2 if (kind == "unpaired" and cam == "wrist") else stamp) + camera_offset
            if kind == "bad_compressed":
                c = CompressedImage()
                c.header.stamp = to_time(cam_stamp)
                c.format = "jpeg"
                c.data = b"\xff\xd8 this is not a jpeg"
                self.cmp_pubs[cam].publish(c)
                continue
            if kind == "good_compressed":
                import cv2
                ok, buf = cv2.imencode(".png", self.image[:, :, ::-1])
                c = CompressedImage()
                c.header.stamp = to_time(cam_stamp)
                c.format = "png"
                c.data = buf.tobytes()
                self.cmp_pubs[cam].publish(c)
                continue
            m = self.image_msg(cam_stamp, "bgr8" if (kind == "bgr_mono" and i == 0) else
                               "mono8" if kind == "bgr_mono" else "rgb8")
            if kind == "bad_encoding":
                m.encoding = "yuv422"
            elif kind == "bad_size":
                m.data = m.data[: len(m.data) // 2]
            elif kind == "empty_image":
                m.data = b""
            self.img_pubs[cam].publish(m)
        if not proprio:
            self.published.append((stamp, time.time()))
            return stamp
        js = JointState()
        js.header.stamp = to_time(stamp)
        js.name = ["arm_1", *FINGERS]
        js.position = [0.1, 0.04, -0.04]
        if kind == "unknown_joint":
            js.name = ["arm_1", "left_finger", "right_finger"]
        elif kind == "bad_joint_state":
            js.position = [0.1]
        elif kind == "joint_names_9_positions_3":
            js.name = ["arm_1", *FINGERS, "a", "b", "c", "d", "e", "f"]
        elif kind == "duplicate_joint":
            js.name, js.position = ["arm_1", *FINGERS, FINGERS[0]], [0.1, 0.04, -0.04, 0.5]
        elif kind == "huge_gripper":
            js.position = [0.1, 1e30, -1e30]
        self.js_pub.publish(js)
        eef = PoseStamped()
        eef.header.stamp = to_time(stamp + eef_offset)
        eef.pose.position.x, eef.pose.position.y, eef.pose.position.z = 0.1, 0.0, 0.3
        eef.pose.orientation.w = 1.0
        if kind == "nan_proprio":
            eef.pose.position.y = float("nan")
        self.eef_pub.publish(eef)
        self.published.append((stamp, time.time()))
        return stamp

    def set_instruction(self, text: str) -> None:
        self.instr_pub.publish(String(data=text))

    # ---- time ----
    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.probe.executor.spin_once(timeout_sec=min(0.01, max(0.0, end - time.monotonic())))

    def stream(self, seconds: float, rate: float = 20.0, kind: str | None = None, stamp_offset: float = 0.0,
               **parts) -> list[float]:
        """Publish observations at `rate` for `seconds` (spinning between); return their stamps.
        parts: passed to publish (camera_offset, eef_offset, cameras, proprio)."""
        stamps = []
        period = 1.0 / rate
        next_t = time.monotonic()
        end = next_t + seconds
        while time.monotonic() < end:
            stamps.append(self.publish(self.now() + stamp_offset, kind, **parts))
            next_t += period
            while time.monotonic() < min(next_t, end):
                self.probe.executor.spin_once(timeout_sec=max(0.0, min(0.005, next_t - time.monotonic())))
        return stamps

    def measure(self, seconds: float, rate: float, warmup: float = 1.5, settle: float = 0.3):
        """Stream `warmup` s (not measured), then `seconds` s, then spin `settle` s. -> (published:
        stamp ns -> wall time of publishing, chunks: [(receive wall time, ActionChunk)]) of the
        measured window only."""
        self.stream(warmup, rate=rate)
        n_chunks, n_pub = len(self.chunks), len(self.published)
        self.stream(seconds, rate=rate)
        self.spin(settle)
        published = {to_ns(stamp): wall for stamp, wall in self.published[n_pub:]}
        return published, self.chunks[n_chunks:]

    def wait_for(self, pred, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return True
            self.probe.executor.spin_once(timeout_sec=0.02)
        return pred()

    def diagnostics(self) -> dict[str, str]:
        """Key-values of the newest policy status on /diagnostics ({} if none yet)."""
        for _, arr in reversed(self.diags):
            for st in arr.status:
                if "policy" in st.name:
                    return {kv.key: kv.value for kv in st.values}
        return {}

    def count(self, key: str) -> int:
        return int(self.diagnostics().get(key, "0"))
