"""Sim bridge + LightVLA policy node, LIBERO-shaped (config/sim_libero.yaml).

    ros2 launch lightvla_ros sim.launch.py checkpoint:=/path/to/ckpt
    ros2 launch lightvla_ros sim.launch.py config:=/path/to/sim_lift.yaml policy:=expert

The bridge runs lock-step and publishes /clock; the policy node follows it (use_sim_time).
Start an episode with the bridge's ~/run_episode service (or autostart:=true). Without a full
ROS 2 install (pip wheels only), run the same through `lightvla-sim-eval`.
"""
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def _nodes(context):
    cfg = LaunchConfiguration("config").perform(context)
    policy = LaunchConfiguration("policy").perform(context)
    bridge_overrides = {"autostart": LaunchConfiguration("autostart").perform(context) == "true",
                        "task": LaunchConfiguration("task").perform(context),
                        "init_state_index": int(LaunchConfiguration("init_state_index").perform(context))}
    policy_overrides = {"use_sim_time": True}
    if policy == "expert":
        bridge_overrides.update(publish_privileged=True, gripper_postprocess="none")
        executable = "expert_policy_node"
    else:
        executable = "policy_node"
        ckpt = LaunchConfiguration("checkpoint").perform(context)
        if ckpt:
            policy_overrides["checkpoint"] = ckpt
    return [
        Node(package="lightvla_ros", executable="sim_bridge_node", name="sim_bridge", output="screen",
             parameters=[cfg, bridge_overrides]),
        Node(package="lightvla_ros", executable=executable, name="lightvla_policy", output="screen",
             parameters=[cfg, policy_overrides]),
    ]


def generate_launch_description():
    default_cfg = str(Path(get_package_share_directory("lightvla_ros")) / "config" / "sim_libero.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=default_cfg, description="YAML for both nodes"),
        DeclareLaunchArgument("policy", default_value="vla", description="vla | expert"),
        DeclareLaunchArgument("checkpoint", default_value="", description="checkpoint dir (overrides the YAML)"),
        DeclareLaunchArgument("task", default_value="0", description="task index or name"),
        DeclareLaunchArgument("init_state_index", default_value="0"),
        DeclareLaunchArgument("autostart", default_value="false", description="run one episode at start"),
        OpaqueFunction(function=_nodes),
    ])
