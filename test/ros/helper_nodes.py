"""Small real nodes that the ROS tests start as processes (python helper_nodes.py <mode> --ros-args ...).

talker:   publishes lightvla_interfaces/ActionChunk on `chunk` at 20 Hz; actions from parameters.
listener: prints the first ActionChunk received on `chunk` as one JSON line, then exits 0.
service:  serves lightvla_interfaces/SetInstruction on `set_instruction` and logs each instruction.
stubborn: ignores SIGINT and SIGTERM, starts a child process that does too, and sleeps.
"""
import json
import os
import signal
import subprocess
import sys
import time


def talker() -> None:
    import rclpy
    from lightvla_interfaces.msg import ActionChunk

    rclpy.init()
    node = rclpy.create_node("talker")
    chunk_size = node.declare_parameter("chunk_size", 2).value
    action_dim = node.declare_parameter("action_dim", 3).value
    space = node.declare_parameter("action_space", "eef_delta_pose_gripper").value
    tag = node.declare_parameter("tag", "").value
    pub = node.create_publisher(ActionChunk, "chunk", 10)
    node.get_logger().info(f"params chunk_size={chunk_size} action_dim={action_dim} "
                           f"action_space={space} tag={tag!r} type={type(tag).__name__}")
    count = [0]

    def tick():
        msg = ActionChunk(chunk_size=chunk_size, action_dim=action_dim, action_space=space)
        msg.actions = [0.5 * i for i in range(chunk_size * action_dim)]
        msg.header.stamp.sec, msg.header.frame_id = count[0], str(tag)
        msg.visual_tokens_kept, msg.visual_tokens_total = 37, 256
        pub.publish(msg)
        count[0] += 1

    node.create_timer(0.05, tick)
    print("ready", flush=True)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        print("talker stopping on SIGINT", flush=True)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def listener() -> None:
    import rclpy
    from lightvla_interfaces.msg import ActionChunk

    rclpy.init()
    node = rclpy.create_node("listener")
    got = []
    node.create_subscription(ActionChunk, "chunk", got.append, 10)
    print("ready", flush=True)
    deadline = time.monotonic() + 30.0
    while not got and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    node.destroy_node()
    rclpy.try_shutdown()
    if not got:
        print("listener: nothing received in 30 s", flush=True)
        sys.exit(3)
    m = got[0]
    print("RECEIVED " + json.dumps({
        "chunk_size": m.chunk_size, "action_dim": m.action_dim, "actions": list(m.actions),
        "action_space": m.action_space, "frame_id": m.header.frame_id,
        "kept": m.visual_tokens_kept, "total": m.visual_tokens_total}), flush=True)


def service() -> None:
    import rclpy
    from lightvla_interfaces.srv import SetInstruction

    rclpy.init()
    node = rclpy.create_node("instruction_server")

    def handle(req, res):
        res.success = bool(req.instruction.strip())
        res.message = "ok" if res.success else "empty instruction"
        print(f"instruction: {req.instruction!r}", flush=True)
        return res

    node.create_service(SetInstruction, "set_instruction", handle)
    print("ready", flush=True)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def stubborn() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c",
                              "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                              "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"])
    print(f"ready child={child.pid} pid={os.getpid()}", flush=True)
    time.sleep(120)


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    modes = {"talker": talker, "listener": listener, "service": service, "stubborn": stubborn}
    if mode not in modes:
        sys.exit(f"usage: helper_nodes.py {{{','.join(modes)}}} [--ros-args ...]")
    modes[mode]()
