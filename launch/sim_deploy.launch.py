"""Deploy a policy on the simulated arm driver: sim_arm_node (kinematic or ManiSkill, behind the topics a
Franka driver + MoveIt Servo + realsense2_camera publish) + policy node. Usage:

    ros2 launch launch/sim_deploy.launch.py params:=launch/params/sim_deploy.yaml
    ros2 topic pub --once /policy/event std_msgs/msg/String "{data: start}"

The nodes come from `robot.ros_graph` (``LAUNCHES["sim_deploy"]``), the table the graph tests start them from.
"""

from robot.ros_graph import launch_description


def generate_launch_description():
    return launch_description("sim_deploy")
