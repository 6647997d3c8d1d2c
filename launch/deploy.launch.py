"""Deploy a policy on a real rig: camera + policy node (behind the safety filter). Usage:

    ros2 launch launch/deploy.launch.py params:=launch/params/deploy.yaml
    ros2 topic pub --once /policy/event std_msgs/msg/String "{data: start}"

The arm side (driver, MoveIt Servo with ``~/switch_command_type`` TWIST, or a joint_trajectory_controller)
comes from the robot's bringup; topic names are parameters in the YAML.
"""

import os
import sys

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.conditions import UnlessCondition
from launch.substitutions import LaunchConfiguration

HERE = os.path.dirname(os.path.abspath(__file__))


def _node(module: str, name: str, **kw):
    return ExecuteProcess(
        cmd=[sys.executable, "-m", f"robot.nodes.{module}", "--ros-args", "-r", f"__node:={name}",
             "--params-file", LaunchConfiguration("params")],
        name=name, output="screen", **kw,
    )


def _validate(context):
    from robot.nodes.config import load_params_file

    load_params_file(LaunchConfiguration("params").perform(context))
    return []


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("params", default_value=os.path.join(HERE, "params", "deploy.yaml")),
        DeclareLaunchArgument("use_realsense_ros", default_value="false"),
        OpaqueFunction(function=_validate),
        _node("camera_node", "camera_node", condition=UnlessCondition(LaunchConfiguration("use_realsense_ros"))),
        _node("policy_node", "policy_node"),
    ])
