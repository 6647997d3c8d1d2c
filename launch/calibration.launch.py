"""Publish the stored camera calibrations as static TF (ee -> camera_link / base -> camera_link).

    ros2 launch launch/calibration.launch.py calibration_dir:=data/calibration cameras:="['front']"

Runs `robot.nodes.calibration_tf` with the Python of the environment the stack is installed in (this
project is a pip package, not an ament package, so the node is started as a module). Combine it with the
camera driver's launch (realsense2_camera publishes camera_link -> camera_color_optical_frame itself; our
transform ends at camera_link so the two trees join).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.substitutions import LaunchConfiguration


def generate_launch_description() -> LaunchDescription:
    calibration_dir = LaunchConfiguration("calibration_dir")
    cameras = LaunchConfiguration("cameras")
    python = LaunchConfiguration("python")
    return LaunchDescription([
        DeclareLaunchArgument("calibration_dir", default_value="data/calibration",
                              description="folder with <camera>.handeye.yaml files (wvl calibrate handeye)"),
        DeclareLaunchArgument("cameras", default_value="['']",
                              description="camera names to publish; [''] = every camera in the folder"),
        DeclareLaunchArgument("python", default_value="python3",
                              description="the Python that has world-vla-loop installed (e.g. .venv/bin/python)"),
        ExecuteProcess(
            cmd=[python, "-m", "robot.nodes.calibration_tf", "--ros-args", "-r", "__node:=calibration_tf",
                 "-p", ["calibration_dir:=", calibration_dir], "-p", ["cameras:=", cameras]],
            name="calibration_tf", output="screen",
        ),
    ])
