"""SANS collection on a real rig: camera + teleop + collector nodes (MoveIt Servo and the arm driver are
launched by the robot's own bringup). Usage:

    ros2 launch launch/collect.launch.py params:=launch/params/collect.yaml use_realsense_ros:=false

With ``use_realsense_ros:=true`` our camera node is not started; point the collector's ``image_topics`` at
realsense2_camera's ``/camera/camera/color/image_raw`` instead. Nodes run as ``python -m robot.nodes.*`` so
no ament package is needed; the parameter file is validated by ``robot/nodes/config.py`` first.
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

    load_params_file(LaunchConfiguration("params").perform(context))  # a bad key stops the launch here
    return []


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("params", default_value=os.path.join(HERE, "params", "collect.yaml")),
        DeclareLaunchArgument("use_realsense_ros", default_value="false"),
        OpaqueFunction(function=_validate),
        _node("camera_node", "camera_node", condition=UnlessCondition(LaunchConfiguration("use_realsense_ros"))),
        _node("teleop_node", "teleop_node"),
        _node("collector_node", "collector_node"),
    ])
