"""Deploy a policy on a real rig: camera + policy node (behind the safety filter). Usage:

    ros2 launch launch/deploy.launch.py params:=launch/params/deploy.yaml
    ros2 topic pub --once /policy/event std_msgs/msg/String "{data: start}"

The arm side (driver, MoveIt Servo with ``~/switch_command_type`` TWIST, or a joint_trajectory_controller)
comes from the robot's bringup; topic names are parameters in the YAML. The nodes come from `robot.ros_graph`
(``LAUNCHES["deploy"]``), the table the graph tests use.
"""

from robot.ros_graph import launch_description


def generate_launch_description():
    return launch_description("deploy")
