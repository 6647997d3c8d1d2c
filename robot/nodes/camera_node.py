"""Camera node: a camera of the registry (pyrealsense2, a replayed recording, a synthetic device) ->
``sensor_msgs/Image`` (rgb8) + ``CameraInfo`` (+ aligned depth, 16UC1 mm), realsense2_camera's topic layout.
All camera logic lives in `robot.cameras`; this shell only reads frames on a thread and publishes them."""

from __future__ import annotations

import threading

from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from robot import rosmsg
from robot.cameras import make_camera
from robot.nodes._shell import load_config, rclpy_types, spin
from robot.nodes.config import CameraNodeConfig


class CameraNode(Node):
    def __init__(self) -> None:
        super().__init__("camera_node")
        self.cfg: CameraNodeConfig = load_config(self, CameraNodeConfig)
        c, self.types = self.cfg, rclpy_types()
        if c.kind == "realsense":
            self.camera = make_camera("realsense", name=c.camera_name, serial=c.serial or None, width=c.width, height=c.height, fps=c.fps, depth=c.depth)
        elif c.kind == "replay":
            self.camera = make_camera("replay", path=c.playback_file, name=c.camera_name, realtime=True)
        else:
            self.camera = make_camera("synthetic", name=c.camera_name, width=c.width, height=c.height, fps=c.fps, depth=c.depth)
        self.pub_rgb = self.create_publisher(Image, f"{c.topic_prefix}/color/image_raw", qos_profile_sensor_data)
        self.pub_info = self.create_publisher(CameraInfo, f"{c.topic_prefix}/color/camera_info", qos_profile_sensor_data)
        self.pub_depth = self.create_publisher(Image, f"{c.topic_prefix}/aligned_depth_to_color/image_raw", qos_profile_sensor_data)
        self.camera.connect()
        self.K, self.D = self._intrinsics()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="camera-node", daemon=True)
        self._thread.start()

    def _intrinsics(self):
        c = self.cfg
        if c.camera_info_file:
            K, D, _, _ = rosmsg.load_camera_info_yaml(c.camera_info_file)
            return K, D
        K, D = getattr(self.camera, "K", None), getattr(self.camera, "D", None)
        if K is None:
            self.get_logger().warning("no intrinsics from the driver and no camera_info_file: CameraInfo carries a nominal K")
            import numpy as np

            K, D = np.array([[c.width, 0, c.width / 2], [0, c.width, c.height / 2], [0, 0, 1.0]]), np.zeros(5)
        return K, D

    def _loop(self) -> None:
        c, T = self.cfg, self.types
        while not self._stop.is_set():
            try:
                f = self.camera.read()
            except (ConnectionError, TimeoutError) as e:  # unplugged / stalled: say so, stop publishing
                self.get_logger().error(f"camera {c.camera_name}: {e}")
                return
            h, w = f.rgb.shape[:2]
            self.pub_rgb.publish(rosmsg.image_msg(f.rgb, f.stamp, c.frame_id, types=T))
            self.pub_info.publish(rosmsg.camera_info_msg(w, h, self.K, self.D, f.stamp, c.frame_id, types=T))
            if f.depth is not None:
                self.pub_depth.publish(rosmsg.image_msg(f.depth, f.stamp, c.frame_id, types=T))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.camera.disconnect()


def main() -> None:
    spin(CameraNode)


if __name__ == "__main__":
    main()
