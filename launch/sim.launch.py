"""Sim bridge + LightVLA policy node: by default the shipped Lift policy on robosuite Lift
(config/sim_lift.yaml, checkpoint lightvla-lift, 128 px cameras as it was trained).

    ros2 launch lightvla_ros sim.launch.py autostart:=true           # one Lift episode, then idle
    ros2 launch lightvla_ros sim.launch.py \
        config:=$(ros2 pkg prefix lightvla_ros)/share/lightvla_ros/config/sim_libero.yaml \
        checkpoint:=/path/to/libero/ckpt camera_size:=256
    ros2 launch lightvla_ros sim.launch.py policy:=expert             # the scripted expert

The bridge runs lock-step and publishes /clock; the policy node follows it (use_sim_time).
Start an episode with the bridge's ~/run_episode service (or autostart:=true). `checkpoint` is a
directory or a name (lightvla_ros.paths.resolve_checkpoint); one that is not found stops the
launch with the places it looked. Without a full ROS 2 install (pip wheels only), run the same
through `lightvla-sim-eval`.
"""
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from lightvla_ros.model.checkpoint import read_gripper_postprocess
from lightvla_ros.paths import SHIPPED_CHECKPOINT, resolve_checkpoint


def _nodes(context):
    arg = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    cfg, policy = arg("config"), arg("policy")
    bridge_overrides = {"autostart": arg("autostart") == "true", "task": arg("task"),
                        "init_state_index": int(arg("init_state_index"))}
    if int(arg("camera_size")) > 0:
        bridge_overrides["camera_size"] = int(arg("camera_size"))
    policy_overrides = {"use_sim_time": True}
    if policy == "expert":
        bridge_overrides.update(publish_privileged=True, gripper_postprocess="none")
        executable = "expert_policy_node"
    else:
        executable = "policy_node"
        policy_overrides["checkpoint"] = str(resolve_checkpoint(arg("checkpoint")))
        declared = read_gripper_postprocess(policy_overrides["checkpoint"])  # "none": fine-tuned on its data
        if declared is not None:
            bridge_overrides["gripper_postprocess"] = declared
    return [
        Node(package="lightvla_ros", executable="sim_bridge_node", name="sim_bridge", output="screen",
             parameters=[cfg, bridge_overrides]),
        Node(package="lightvla_ros", executable=executable, name="lightvla_policy", output="screen",
             parameters=[cfg, policy_overrides]),
    ]


def generate_launch_description():
    default_cfg = str(Path(get_package_share_directory("lightvla_ros")) / "config" / "sim_lift.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=default_cfg, description="YAML for both nodes"),
        DeclareLaunchArgument("policy", default_value="vla", description="vla | expert"),
        DeclareLaunchArgument("checkpoint", default_value=SHIPPED_CHECKPOINT,
                              description="checkpoint directory, or the name of one (lightvla_ros.paths)"),
        DeclareLaunchArgument("camera_size", default_value="128",
                              description="rendered camera size in px; 0 = the config's"),
        DeclareLaunchArgument("task", default_value="0", description="task index or name"),
        DeclareLaunchArgument("init_state_index", default_value="0"),
        DeclareLaunchArgument("autostart", default_value="false", description="run one episode at start"),
        OpaqueFunction(function=_nodes),
    ])
