"""Sim bridge as a real process over DDS: lock-step protocol, and bad input that must not kill it."""
import json
import math

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("lightvla_interfaces")

from lightvla_ros.ros.launcher import ros_domain  # noqa: E402

BRIDGE_PARAMS = {
    "suite": "robosuite", "task": "Lift", "camera_size": 64, "render_quality": "fast",
    "mode": "lock_step", "action_timeout": 10.0, "wait_for_policy": 10.0,
}


def _action_msg(stamp, values, chunk_size=1, action_dim=7):
    from lightvla_interfaces.msg import ActionChunk

    msg = ActionChunk(chunk_size=chunk_size, action_dim=action_dim, action_space="eef_delta_pose_gripper")
    msg.header.stamp = stamp
    msg.actions = [float(v) for v in values]
    return msg


def test_bridge_lock_step_and_bad_input(tmp_path):
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseStamped
    from lightvla_interfaces.msg import ActionChunk
    from lightvla_interfaces.srv import RunEpisode
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String

    with ros_domain(log_dir=tmp_path) as dom:
        # a missing LIBERO asset directory is a per-request error, not a crash
        bridge = dom.start_node("lightvla-sim-bridge", params=BRIDGE_PARAMS, name="sim_bridge",
                                env={"LIBERO_ASSETS_DIR": str(tmp_path / "no_assets")})
        bridge.wait_for_log_line(r"sim bridge ready", timeout=60)
        with dom.rclpy_node("bridge_probe") as probe:
            node = probe.node
            pub = node.create_publisher(ActionChunk, "/lightvla/action", 10)
            client = node.create_client(RunEpisode, "/sim_bridge/run_episode")
            probe.wait_for_service(client, timeout=30)
            assert probe.spin_until(lambda: pub.get_subscription_count() > 0, 20)

            clocks, images, joints, applied = [], [], [], []
            state = {"n": 0}

            def on_clock(msg):
                clocks.append(msg.clock)
                state["n"] += 1
                if state["n"] == 2:
                    pub.publish(_action_msg(msg.clock, [math.nan] * 7))      # bad: ignored
                    pub.publish(_action_msg(Time(sec=0, nanosec=1), [0.0] * 7))  # stale: late
                a = [0.0, 0.0, 0.5, 0.0, 0.0, 0.0, -1.0]                   # move up, gripper open
                applied.append(a)
                pub.publish(_action_msg(msg.clock, a))

            # subscribe first, so discovery has matched long before the episode starts
            node.create_subscription(Clock, "/clock", on_clock, 10)
            node.create_subscription(Image, "/camera/agentview/image_raw", images.append, qos_profile_sensor_data)
            node.create_subscription(JointState, "/joint_states", joints.append, qos_profile_sensor_data)
            stats = []
            latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            node.create_subscription(String, "/sim/episode_stats", lambda m: stats.append(json.loads(m.data)), latched)
            instructions, poses = [], []
            node.create_subscription(PoseStamped, "/eef_pose", poses.append, qos_profile_sensor_data)
            node.create_subscription(String, "/instruction", instructions.append, latched)

            # 1. bad actions with no episode running: logged, counted, ignored
            zero = Time(sec=0, nanosec=0)
            pub.publish(_action_msg(zero, [math.nan] * 7))
            pub.publish(_action_msg(zero, [0.0] * 5))
            pub.publish(_action_msg(zero, [0.0] * 6 + [-1.0]))
            bridge.wait_for_log_line(r"bad action .*NaN", timeout=10)
            bridge.wait_for_log_line(r"bad action .*ActionChunk has 5 values", timeout=10)
            bridge.wait_for_log_line(r"no episode is running", timeout=10)

            def call(req, timeout=120.0):
                fut = client.call_async(req)
                assert probe.spin_until(fut.done, timeout), "run_episode did not answer"
                return fut.result()

            # 2. unknown task, unknown suite, missing assets: accepted=false with the reason
            res = call(RunEpisode.Request(suite="robosuite", task="NoSuchTask", init_state_index=0))
            assert not res.accepted and "NoSuchTask" in res.message
            res = call(RunEpisode.Request(suite="libero_nowhere", task="0"))
            assert not res.accepted and "libero_nowhere" in res.message
            res = call(RunEpisode.Request(suite="libero_object", task="0"))
            assert not res.accepted and "assets" in res.message.lower(), res.message
            assert bridge.is_running()

            # 3. a real lock-step episode: answer each /clock tick with the action for that step,
            #    with a NaN action and a stale one mixed in; both are ignored, no step is dropped
            res = call(RunEpisode.Request(suite="robosuite", task="Lift", init_state_index=1, max_steps=6))
            assert res.accepted, res.message
            r = res.result
            assert r.task_name == "Lift" and r.init_state_index == 1 and not r.success
            assert r.steps == 0 + 6  # protocol wait steps (robosuite: none, SimEnv.num_wait_steps) + policy steps
            assert probe.spin_until(lambda: stats, 10)
            s = stats[-1]
            assert s["policy_steps"] == 6 and s["actions_applied"] == 6
            assert s["dropped_steps"] == 0
            assert s["bad_actions"] == 1 and s["late_actions"] == 1
            assert len(clocks) == 6
            period_ns = 50_000_000
            ns = [c.sec * 10**9 + c.nanosec for c in clocks]
            assert all(b - a == period_ns for a, b in zip(ns, ns[1:]))  # sim time, one control period a step
            probe.spin_until(lambda: len(images) >= 6, 5)
            assert images and images[0].encoding == "rgb8" and images[0].width == 64
            assert images[0].header.frame_id == "agentview_camera"
            assert poses and poses[0].header.frame_id == "world"  # the values are world coordinates
            img_ns = {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in images}
            assert img_ns <= set(ns)  # each observation is stamped with its step's sim time
            assert joints and len(joints[0].name) == 9 and "gripper0_finger_joint1" in joints[0].name
            assert probe.spin_until(lambda: instructions, 5) and instructions[-1].data == "lift the red cube"

            # the arm moved up: the actions were applied
            probe.spin_until(lambda: len(poses) >= 6, 5)
            z = [p.pose.position.z for p in poses]
            assert z[-1] - z[0] > 0.02, z
            # 4. the bridge is still alive and says what happened on /diagnostics
            diags = probe.collect("/diagnostics", DiagnosticArray, count=1, timeout=10)
            values = {kv.key: kv.value for kv in diags[0].status[0].values}
            assert int(values["bad_actions"]) >= 3
            assert int(values["actions_without_episode"]) >= 1
            assert int(values["rejected_episodes"]) == 3
            assert int(values["episodes"]) == 1
            assert bridge.is_running()
