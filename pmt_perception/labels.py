"""Label conventions, defined once: the ignore label, the Cityscapes colours and category table.

It imports none of the package's modules, so datasets, losses, metrics, figures and the node
can all use it without a cycle (`visualize` writes PNGs through `data.io`, so the palette the
datasets carry cannot live in `visualize`).
"""
from __future__ import annotations

import numpy as np

__all__ = ["IGNORE_LABEL", "CITYSCAPES_COLORS", "cityscapes_palette", "CITYSCAPES_CATEGORY_NAMES",
           "CITYSCAPES_CATEGORY_OF_TRAIN_ID"]

# "No label" in every segmentation map (dataset samples, bags, the node's seg output): never
# a class id, so a network has at most 255 classes.
IGNORE_LABEL = 255

# The 19 Cityscapes evaluation classes in trainId order, with the colours of the official
# cityscapesScripts label table (labels.py), so figures match every Cityscapes paper.
CITYSCAPES_COLORS = (
    (128, 64, 128),   # road
    (244, 35, 232),   # sidewalk
    (70, 70, 70),     # building
    (102, 102, 156),  # wall
    (190, 153, 153),  # fence
    (153, 153, 153),  # pole
    (250, 170, 30),   # traffic light
    (220, 220, 0),    # traffic sign
    (107, 142, 35),   # vegetation
    (152, 251, 152),  # terrain
    (70, 130, 180),   # sky
    (220, 20, 60),    # person
    (255, 0, 0),      # rider
    (0, 0, 142),      # car
    (0, 0, 70),       # truck
    (0, 60, 100),     # bus
    (0, 80, 100),     # train
    (0, 0, 230),      # motorcycle
    (119, 11, 32),    # bicycle
)


def cityscapes_palette() -> np.ndarray:
    """The standard Cityscapes colours of the 19 trainIds, uint8 (19, 3) RGB."""
    return np.array(CITYSCAPES_COLORS, dtype=np.uint8)


# Cityscapes 19 train ids -> the 7 categories of cityscapesScripts' labels.py (void excluded):
# road sidewalk | building wall fence | pole traffic-light traffic-sign | vegetation terrain |
# sky | person rider | car truck bus train motorcycle bicycle.
CITYSCAPES_CATEGORY_NAMES = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
CITYSCAPES_CATEGORY_OF_TRAIN_ID = (0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4, 5, 5, 6, 6, 6, 6, 6, 6)
