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
from .cost_volume import CostVolumeDisparityBranch

# ImageNet statistics: the one place inputs are normalised (callers pass [0, 1] images).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PMTOutput(NamedTuple):
    coarse_logits: torch.Tensor             # B x C x H x W
    disparity: torch.Tensor                 # B x 1 x H x W, pixels of the input resolution
    refined_logits: torch.Tensor            # B x C x H x W
    seg_attention: Optional[torch.Tensor] = None   # B x 1 x H/4 x W/4, sigmoid
    disp_attention: Optional[torch.Tensor] = None  # B x 1 x H/4 x W/4, sigmoid
    # Cost-volume head only: B x D x H/s x W/s softmax over disparity candidates 0, s, 2s, ...
    disparity_probability: Optional[torch.Tensor] = None


class PMTNet(nn.Module):
    def __init__(self, *, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = FeatureTaps(config.backbone, pretrained=config.pretrained)
        f1_channels, f2_channels, f4_channels = self.backbone.channels
        self.spp_f1 = SpatialPyramidPooling(f1_channels, windows=config.spp_f1_windows,
                                            channels=config.spp_channels)
        # F2' feeds the disparity branch only; a cost volume at H/4 matches on F1' instead.
        self.matches_on_f1 = config.disparity_head == "cost_volume" and config.cost_volume_scale == 4
        self.spp_f2 = None if self.matches_on_f1 else SpatialPyramidPooling(
            f2_channels, windows=config.spp_f2_windows, channels=config.spp_channels)
        self.coarse_segmentation = CoarseSegmentationBranch(f4_channels, config=config)
        self.disparity = build_disparity_branch(
            config, f1_spp_channels=self.spp_f1.out_channels,
            f2_spp_channels=0 if self.spp_f2 is None else self.spp_f2.out_channels)
        self.refined_segmentation = RefinedSegmentationBranch(
            self.spp_f1.out_channels, f_disp_channels=config.width(64), config=config)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def siamese_modules(self) -> tuple[nn.Module, ...]:
        """Modules that run once per view (the paper's 18.0M counts them twice)."""
        return tuple(m for m in (self.backbone, self.spp_f1, self.spp_f2) if m is not None)

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> PMTOutput:
        if not torch.jit.is_tracing():  # Python-level checks would be frozen into a trace
            self.check_inputs(left, right)
        left = (left - self.mean) / self.std
        right = (right - self.mean) / self.std

        # Siamese feature extraction: shared weights, both views in one batched pass.
        f1, f2, f4 = self.backbone(torch.cat([left, right], 0))
        f1_left, f1_right = self.spp_f1(f1).chunk(2, 0)
        f4_left, f4_right = f4.chunk(2, 0)
        match_left, match_right = (f1_left, f1_right) if self.spp_f2 is None \
            else self.spp_f2(f2).chunk(2, 0)

        coarse_logits, f_seg = self.coarse_segmentation(f4_left, f4_right, left)
        disparity, f_disp, disparity_probability = self.disparity(match_left, match_right, f_seg, left)
        refined_logits, attention = self.refined_segmentation(f1_left, f1_right, f_seg, f_disp, left)
        seg_attention, disp_attention = attention if attention is not None else (None, None)
        return PMTOutput(coarse_logits, disparity, refined_logits, seg_attention, disp_attention,
                         disparity_probability)

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


def to_channels_last(model: nn.Module) -> nn.Module:
    """`model.to(memory_format=torch.channels_last)` for the 4-D (conv) weights only: the
    cost volume's 3-D convolutions have 5-D weights, which that call rejects."""
    for parameter in model.parameters():
        if parameter.dim() == 4:
            parameter.data = parameter.data.contiguous(memory_format=torch.channels_last)
    return model


def build_disparity_branch(config: ModelConfig, *, f1_spp_channels: int,
                           f2_spp_channels: int) -> nn.Module:
    """The published regression branch, or the matching branch on F1' (H/4) or F2' (H/8)."""
    if config.disparity_head == "regression":
        return DisparityBranch(f2_spp_channels, config=config)
    scale = config.cost_volume_scale
    return CostVolumeDisparityBranch(
        f1_spp_channels if scale == 4 else f2_spp_channels,
        context_channels=config.width(32), scale=scale, max_disparity=config.max_disparity,
        groups=config.cost_volume_groups, aggregation_channels=config.cost_aggregation_channels,
        fdisp_channels=config.width(64), upsample=config.upsample,
        hourglass_stride=config.hourglass_stride, separable=config.separable,
        correlation=config.cost_volume_correlation)


def build_model(config: ModelConfig) -> PMTNet:
    return PMTNet(config=config)


def count_parameters(model: PMTNet) -> dict[str, int]:
    """Unique trainable parameters, and the paper's Siamese count (backbone + SPP twice)."""
    unique = sum(p.numel() for p in model.parameters() if p.requires_grad)
    siamese = sum(p.numel() for m in model.siamese_modules for p in m.parameters() if p.requires_grad)
    return {"unique": unique, "siamese_counted": unique + siamese, "siamese_modules": siamese,
            "heads": unique - siamese}
