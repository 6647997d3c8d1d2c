"""SANS collection on a real rig: camera + teleop + collector nodes (MoveIt Servo and the arm driver are
launched by the robot's own bringup). Usage:

    ros2 launch launch/collect.launch.py params:=launch/params/collect.yaml use_realsense_ros:=false

With ``use_realsense_ros:=true`` our camera node is not started; point the collector's ``image_topics`` at
realsense2_camera's ``/camera/camera/color/image_raw`` instead. Nodes run as ``python -m robot.nodes.*`` so
no ament package is needed; the parameter file is validated by ``robot/nodes/config.py`` first. The nodes,
their command lines and the parameter file come from `robot.ros_graph` (``LAUNCHES["collect"]``), the table the
graph tests start the same nodes from.
"""

from robot.ros_graph import launch_description


def generate_launch_description():
    return launch_description("collect")
