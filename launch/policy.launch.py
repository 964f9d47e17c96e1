"""Launch the LightVLA policy node with config/policy.yaml (needs a full ROS 2 install with launch_ros).

    ros2 launch lightvla_ros policy.launch.py                       # the shipped checkpoint (lightvla-lift)
    ros2 launch lightvla_ros policy.launch.py checkpoint:=/path/to/ckpt \
        camera_topics:="['/cam/front/image_raw', '/cam/wrist/image_raw']" device:=cuda execution_mode:=async

`checkpoint` is a directory, or a name looked up in the user's checkpoint directory and the
package's shipped checkpoints (lightvla_ros.paths.resolve_checkpoint): the default works from any
directory, and a checkpoint that is not found stops the launch with the places it looked.
Without launch (pip-only ROS), the same as:
    lightvla-policy --ros-args --params-file config/policy.yaml -p checkpoint:=/path/to/ckpt
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from lightvla_ros.paths import SHIPPED_CHECKPOINT, resolve_checkpoint


def _node(context):
    checkpoint = resolve_checkpoint(LaunchConfiguration("checkpoint").perform(context))
    return [Node(
        package="lightvla_ros",
        executable="policy_node",
        name="lightvla_policy",
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "checkpoint": str(checkpoint),
                "camera_topics": ParameterValue(LaunchConfiguration("camera_topics"), value_type=list[str]),
                "device": LaunchConfiguration("device"),
                "execution_mode": LaunchConfiguration("execution_mode"),
                "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
            },
        ],
    )]


def generate_launch_description():
    share = get_package_share_directory("lightvla_ros")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "policy.yaml"),
                              description="parameter file for the policy node"),
        DeclareLaunchArgument("checkpoint", default_value=SHIPPED_CHECKPOINT,
                              description="checkpoint directory, or the name of one (lightvla_ros.paths)"),
        DeclareLaunchArgument("camera_topics",
                              default_value="['/camera/agentview/image_raw', '/camera/wrist/image_raw']",
                              description="one image topic per camera, in the model's image order"),
        DeclareLaunchArgument("device", default_value="auto", description="auto | cpu | cuda | cuda:N"),
        DeclareLaunchArgument("execution_mode", default_value="open_loop",
                              description="open_loop | async | temporal_ensemble"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="follow /clock"),
        OpaqueFunction(function=_node),
    ])
