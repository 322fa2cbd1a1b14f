"""Topic names of the perception node, defined once (DESIGN §4: stereo_image_proc's inputs).

The node, the stereo source, the launch file, the bag writer / reader and the monitor all take
their names from here. Names are relative, so they follow the namespace and remap. No ROS
import: bags are read and written without rclpy, and the launch file loads this too.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LEFT_IMAGE", "RIGHT_IMAGE", "LEFT_INFO", "RIGHT_INFO", "INPUT_TOPICS", "SEG",
           "SEG_COLOR", "DISPARITY", "POINTS", "SEG_CONFIDENCE", "DISPARITY_CONFIDENCE",
           "SEG_CLASSES", "GROUND_TRUTH_SEG", "GROUND_TRUTH_DISPARITY", "StereoTopics"]

# Inputs, in the order of the node's synchronizer callback.
LEFT_IMAGE = "left/image_rect"
RIGHT_IMAGE = "right/image_rect"
LEFT_INFO = "left/camera_info"
RIGHT_INFO = "right/camera_info"
INPUT_TOPICS = (LEFT_IMAGE, RIGHT_IMAGE, LEFT_INFO, RIGHT_INFO)

# Outputs.
SEG = "seg"
SEG_COLOR = "seg_color"
DISPARITY = "disparity"
POINTS = "points2"
SEG_CONFIDENCE = "seg_confidence"
DISPARITY_CONFIDENCE = "disparity_confidence"
SEG_CLASSES = "seg_classes"

# Ground truth of the left view in bags: class ids (mono8, 255 = unlabeled) and disparity
# (DisparityImage as stereo_image_proc writes it, or a 32FC1 Image of raw left disparity).
GROUND_TRUTH_SEG = "ground_truth/seg"
GROUND_TRUTH_DISPARITY = "ground_truth/disparity"


@dataclass(frozen=True)
class StereoTopics:
    """The topics of a stereo bag; the defaults are the node's, so a bag written with them feeds
    stereo_seg_node without remapping."""

    left_image: str = LEFT_IMAGE
    right_image: str = RIGHT_IMAGE
    left_info: str = LEFT_INFO
    right_info: str = RIGHT_INFO
    gt_seg: str = GROUND_TRUTH_SEG
    gt_disparity: str = GROUND_TRUTH_DISPARITY

    def inputs(self) -> tuple[str, str, str, str]:
        """The four topics the node synchronizes, in the order of its callback."""
        return (self.left_image, self.right_image, self.left_info, self.right_info)
