"""The node's publishers and the conversion of one Prediction into their messages.

An output costs nothing unless it is switched on AND someone listens: the subscription count
is checked before any conversion (the point cloud alone is megabytes per frame). Outputs go
out cheapest first, so the segmentation reaches low-latency consumers before the cloud is built.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import String
from stereo_msgs.msg import DisparityImage

from pmt_perception import topics
from pmt_perception.geometry import subsample
from pmt_perception.labels import IGNORE_LABEL
from pmt_perception.ros.conversions import make_disparity_image, numpy_to_image, pointcloud2_of_disparity
from pmt_perception.ros.qos import latched_qos

__all__ = ["IGNORE_LABEL", "CLASSES_TOPIC", "OUTPUT_TOPICS", "CONFIDENCE_TOPICS", "OutputSettings",
           "OutputPublishers", "classes_message"]

CLASSES_TOPIC = topics.SEG_CLASSES
# topic -> (message type, the parameter that switches it on)
OUTPUT_TOPICS = {
    topics.SEG: (Image, "publish_seg"),
    topics.DISPARITY: (DisparityImage, "publish_disparity"),
    topics.SEG_COLOR: (Image, "publish_seg_color"),
    topics.POINTS: (PointCloud2, "publish_points"),
    topics.SEG_CONFIDENCE: (Image, "publish_confidence"),
    topics.DISPARITY_CONFIDENCE: (Image, "publish_confidence"),
}
# The outputs that need the Predictor's confidence maps (a costlier graph: softmax maxima).
CONFIDENCE_TOPICS = frozenset({topics.SEG_CONFIDENCE, topics.DISPARITY_CONFIDENCE})


@dataclass(frozen=True)
class OutputSettings:
    """The parameters that shape outputs; they change at once (no reconfigure needed)."""

    enabled: frozenset
    min_disparity: float
    max_disparity: float
    points_stride: int
    points_min_depth: float
    points_max_depth: float
    points_labels: bool

    @classmethod
    def from_parameters(cls, values: dict) -> "OutputSettings":
        enabled = frozenset(topic for topic, (_, switch) in OUTPUT_TOPICS.items() if values[switch])
        return cls(enabled=enabled, min_disparity=float(values["min_disparity"]),
                   max_disparity=float(values["max_disparity"]),
                   points_stride=int(values["points_stride"]),
                   points_min_depth=float(values["points_min_depth"]),
                   points_max_depth=float(values["points_max_depth"]),
                   points_labels=bool(values["points_labels"]))


def classes_message(class_names, palette, **extra) -> String:
    """The class table as JSON in a std_msgs/String (no vision_msgs dependency)."""
    table = {"class_names": list(class_names),
             "palette": [[int(c) for c in color] for color in np.asarray(palette)],
             "ignore_label": IGNORE_LABEL, **extra}
    return String(data=json.dumps(table))


class OutputPublishers:
    def __init__(self, node, qos) -> None:
        self._node = node
        self.publishers = {topic: node.create_publisher(msg_type, topic, qos)
                           for topic, (msg_type, _) in OUTPUT_TOPICS.items()}
        self.classes = node.create_publisher(String, CLASSES_TOPIC, latched_qos())

    def destroy(self) -> None:
        for publisher in [*self.publishers.values(), self.classes]:
            self._node.destroy_publisher(publisher)
        self.publishers = {}

    def wanted(self, settings: OutputSettings) -> set[str]:
        """Topics switched on that have at least one subscriber right now."""
        return {topic for topic in settings.enabled
                if self.publishers[topic].get_subscription_count() > 0}

    def needs_confidence(self, settings: OutputSettings) -> bool:
        return bool(self.wanted(settings) & CONFIDENCE_TOPICS)

    def publish(self, frame, prediction, colorize, settings: OutputSettings) -> dict[str, float]:
        """Publish every wanted output of one frame; returns seconds spent per output."""
        wanted = self.wanted(settings)
        header = frame.header
        spent: dict[str, float] = {}

        def timed(topic, build):
            start = time.perf_counter()
            self.publishers[topic].publish(build())
            spent[topic] = time.perf_counter() - start

        if topics.SEG in wanted:
            timed(topics.SEG, lambda: numpy_to_image(prediction.labels, "mono8", header))
        if topics.DISPARITY in wanted:
            timed(topics.DISPARITY, lambda: make_disparity_image(
                prediction.disparity, header, frame.camera,
                min_disparity=settings.min_disparity, max_disparity=settings.max_disparity))
        if topics.SEG_COLOR in wanted:
            timed(topics.SEG_COLOR,
                  lambda: numpy_to_image(colorize(prediction.labels), "rgb8", header))
        if topics.POINTS in wanted:
            timed(topics.POINTS, lambda: self._cloud(frame, prediction, settings))
        for topic, values in ((topics.SEG_CONFIDENCE, prediction.seg_confidence),
                              (topics.DISPARITY_CONFIDENCE, prediction.disparity_confidence)):
            if topic in wanted and values is not None:
                timed(topic, lambda v=values: numpy_to_image(
                    np.asarray(v, dtype=np.float32), "32FC1", header))
        return spent

    @staticmethod
    def _cloud(frame, prediction, settings: OutputSettings) -> PointCloud2:
        stride = settings.points_stride
        labels = subsample(prediction.labels, stride=stride) if settings.points_labels else None
        return pointcloud2_of_disparity(
            frame.camera, prediction.disparity, subsample(frame.left, stride=stride), labels,
            frame.header, stride=stride, min_depth=settings.points_min_depth,
            max_depth=settings.points_max_depth)
