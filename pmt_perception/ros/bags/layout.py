"""Topic names and message types of a stereo bag. Inputs and outputs are the node's defaults
(docs/node.md), so a bag written here feeds stereo_seg_node without remapping."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StereoTopics", "IMAGE", "CAMERA_INFO", "DISPARITY_IMAGE", "message_class"]

IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
DISPARITY_IMAGE = "stereo_msgs/msg/DisparityImage"


@dataclass(frozen=True)
class StereoTopics:
    left_image: str = "left/image_rect"
    right_image: str = "right/image_rect"
    left_info: str = "left/camera_info"
    right_info: str = "right/camera_info"
    # Ground truth of the left view: class ids (mono8, 255 = unlabeled) and disparity
    # (DisparityImage as stereo_image_proc writes it, or a 32FC1 Image of raw left disparity).
    gt_seg: str = "ground_truth/seg"
    gt_disparity: str = "ground_truth/disparity"

    def inputs(self) -> tuple[str, str, str, str]:
        """The four topics the node synchronizes, in the order of its callback."""
        return (self.left_image, self.right_image, self.left_info, self.right_info)


def message_class(msgtype: str):
    """The rclpy message class of a ``pkg/msg/Name`` type string (as bags store it)."""
    import importlib

    parts = msgtype.split("/")
    if len(parts) == 2:  # ROS 1 style "pkg/Name"
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3:
        raise ValueError(f"not a message type name: {msgtype!r}")
    package, kind, name = parts
    try:
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"message type {msgtype} is not installed: {error}") from None
