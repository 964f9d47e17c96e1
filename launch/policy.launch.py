"""Launch the LightVLA policy node with config/policy.yaml (needs a full ROS 2 install with launch_ros).

    ros2 launch lightvla_ros policy.launch.py checkpoint:=/path/to/ckpt \
        camera_topics:="['/cam/front/image_raw', '/cam/wrist/image_raw']" device:=cuda execution_mode:=async

Without launch (pip-only ROS), the same as:
    lightvla-policy --ros-args --params-file config/policy.yaml -p checkpoint:=/path/to/ckpt
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description():
    share = get_package_share_directory("lightvla_ros")
    args = [
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "policy.yaml"),
                              description="parameter file for the policy node"),
        DeclareLaunchArgument("checkpoint", default_value="data/checkpoints/lightvla-tiny",
                              description="checkpoint directory"),
        DeclareLaunchArgument("camera_topics",
                              default_value="['/camera/agentview/image_raw', '/camera/wrist/image_raw']",
                              description="one image topic per camera, in the model's image order"),
        DeclareLaunchArgument("device", default_value="auto", description="auto | cpu | cuda | cuda:N"),
        DeclareLaunchArgument("execution_mode", default_value="open_loop",
                              description="open_loop | async | temporal_ensemble"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="follow /clock"),
    ]
    node = Node(
        package="lightvla_ros",
        executable="policy_node",
        name="lightvla_policy",
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "checkpoint": LaunchConfiguration("checkpoint"),
                "camera_topics": ParameterValue(LaunchConfiguration("camera_topics"), value_type=list[str]),
                "device": LaunchConfiguration("device"),
                "execution_mode": LaunchConfiguration("execution_mode"),
                "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
            },
        ],
    )
    return LaunchDescription(args + [node])
