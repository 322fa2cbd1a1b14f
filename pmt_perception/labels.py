"""Label conventions, defined once: the ignore label and the Cityscapes category table.

It imports nothing, so datasets, losses, metrics, figures and the node can all use it without
a cycle (`data` imports `visualize`, so these cannot live in `data/`).
"""
from __future__ import annotations

__all__ = ["IGNORE_LABEL", "CITYSCAPES_CATEGORY_NAMES", "CITYSCAPES_CATEGORY_OF_TRAIN_ID"]

# "No label" in every segmentation map (dataset samples, bags, the node's seg output): never
# a class id, so a network has at most 255 classes.
IGNORE_LABEL = 255

# Cityscapes 19 train ids -> the 7 categories of cityscapesScripts' labels.py (void excluded):
# road sidewalk | building wall fence | pole traffic-light traffic-sign | vegetation terrain |
# sky | person rider | car truck bus train motorcycle bicycle.
CITYSCAPES_CATEGORY_NAMES = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
CITYSCAPES_CATEGORY_OF_TRAIN_ID = (0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4, 5, 5, 6, 6, 6, 6, 6, 6)
