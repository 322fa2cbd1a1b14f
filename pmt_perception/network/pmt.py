"""PMTNet: the progressive multi-task network, assembled from the Siamese backbone and the
three branches, and `build_model(config)`."""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import nn

from ..config import ModelConfig
from .backbone import FeatureTaps
from .blocks import SpatialPyramidPooling
from .branches import CoarseSegmentationBranch, DisparityBranch, RefinedSegmentationBranch

# ImageNet statistics: the one place inputs are normalised (callers pass [0, 1] images).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PMTOutput(NamedTuple):
    coarse_logits: torch.Tensor             # B x C x H x W
    disparity: torch.Tensor                 # B x 1 x H x W, pixels of the input resolution
    refined_logits: torch.Tensor            # B x C x H x W
    seg_attention: Optional[torch.Tensor] = None   # B x 1 x H/4 x W/4, sigmoid
    disp_attention: Optional[torch.Tensor] = None  # B x 1 x H/4 x W/4, sigmoid


class PMTNet(nn.Module):
    def __init__(self, *, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = FeatureTaps(config.backbone, pretrained=config.pretrained)
        f1_channels, f2_channels, f4_channels = self.backbone.channels
        self.spp_f1 = SpatialPyramidPooling(f1_channels, windows=config.spp_f1_windows,
                                            channels=config.spp_channels)
        self.spp_f2 = SpatialPyramidPooling(f2_channels, windows=config.spp_f2_windows,
                                            channels=config.spp_channels)
        self.coarse_segmentation = CoarseSegmentationBranch(f4_channels, config=config)
        self.disparity = DisparityBranch(self.spp_f2.out_channels, config=config)
        self.refined_segmentation = RefinedSegmentationBranch(self.spp_f1.out_channels,
                                                              config=config)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def siamese_modules(self) -> tuple[nn.Module, ...]:
        """Modules that run once per view (the paper's 18.0M counts them twice)."""
        return (self.backbone, self.spp_f1, self.spp_f2)

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> PMTOutput:
        if not torch.jit.is_tracing():  # Python-level checks would be frozen into a trace
            self.check_inputs(left, right)
        left = (left - self.mean) / self.std
        right = (right - self.mean) / self.std

        # Siamese feature extraction: shared weights, both views in one batched pass.
        f1, f2, f4 = self.backbone(torch.cat([left, right], 0))
        f1_left, f1_right = self.spp_f1(f1).chunk(2, 0)
        f2_left, f2_right = self.spp_f2(f2).chunk(2, 0)
        f4_left, f4_right = f4.chunk(2, 0)

        coarse_logits, f_seg = self.coarse_segmentation(f4_left, f4_right, left)
        disparity, f_disp = self.disparity(f2_left, f2_right, f_seg, left)
        refined_logits, attention = self.refined_segmentation(f1_left, f1_right, f_seg, f_disp, left)
        seg_attention, disp_attention = attention if attention is not None else (None, None)
        return PMTOutput(coarse_logits, disparity, refined_logits, seg_attention, disp_attention)

    def check_inputs(self, left: torch.Tensor, right: torch.Tensor) -> None:
        for name, image in (("left", left), ("right", right)):
            if not isinstance(image, torch.Tensor):
                raise ValueError(f"{name} must be a torch.Tensor, got {type(image).__name__}")
            if image.dim() != 4 or image.shape[1] != 3:
                raise ValueError(f"{name} must be B x 3 x H x W, got shape {tuple(image.shape)}")
            if not image.is_floating_point():
                raise ValueError(f"{name} must be a float tensor in [0, 1], got {image.dtype}")
        if left.shape != right.shape:
            raise ValueError(f"left and right shapes differ: {tuple(left.shape)} vs {tuple(right.shape)}")
        h, w = left.shape[-2:]
        need = self.config.min_input_size
        if h < need or w < need:
            raise ValueError(f"input {h}x{w} is too small: the fixed SPP windows of variant "
                             f"{self.config.variant!r} need at least {need}x{need}")


def build_model(config: ModelConfig) -> PMTNet:
    return PMTNet(config=config)


def count_parameters(model: PMTNet) -> dict[str, int]:
    """Unique trainable parameters, and the paper's Siamese count (backbone + SPP twice)."""
    unique = sum(p.numel() for p in model.parameters() if p.requires_grad)
    siamese = sum(p.numel() for m in model.siamese_modules for p in m.parameters() if p.requires_grad)
    return {"unique": unique, "siamese_counted": unique + siamese, "siamese_modules": siamese,
            "heads": unique - siamese}
