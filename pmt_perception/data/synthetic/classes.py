"""The synthetic scenes' classes: each has its own geometry and appearance statistics."""
from __future__ import annotations

import numpy as np

# Index = label id. Every pixel gets one of these (255 "ignore" is never used: the backdrop
# covers every ray, so every pixel has a class and a finite disparity).
CLASS_NAMES = (
    "sky",         # a far fronto-parallel backdrop (0.5-2 px at 720 wide): finite, tiny disparity;
                   # texture-poor
    "ground",      # an infinite plane seen in perspective: disparity slanted along the rows
    "wall",        # thin boxes metres long at any angle: planes, often plain (ambiguous matching)
    "box",         # boxes resting on the ground, any yaw
    "sphere",      # balls and boulders
    "cylinder",    # barrels, pillars, logs
    "vegetation",  # bushes and tree crowns: clusters of leaf spheres with holes, ragged borders
    "pole",        # poles, trunks and branches 1-4 px wide
)

PALETTE = np.array([
    (70, 130, 180),   # sky
    (152, 110, 70),   # ground
    (190, 153, 153),  # wall
    (250, 170, 30),   # box
    (220, 20, 60),    # sphere
    (0, 60, 200),     # cylinder
    (107, 190, 35),   # vegetation
    (255, 255, 0),    # pole
], dtype=np.uint8)

CLASS_ID = {name: index for index, name in enumerate(CLASS_NAMES)}
