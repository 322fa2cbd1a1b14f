"""PMTNet: the progressive multi-task network, assembled from the Siamese backbone and the
three branches, and `build_model(config, weights=...)`: the one table that turns a ModelConfig
into the keyword arguments of each part. The parts never see the config."""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import nn
from torchvision.models import WeightsEnum

from ..config import ModelConfig
from .backbone import FeatureTaps, imagenet_weights, load_imagenet_weights
from .blocks import SpatialPyramidPooling
from .branches import CoarseSegmentationBranch, DisparityBranch, RefinedSegmentationBranch
from .cost_volume import CostVolumeDisparityBranch
from .disparity_refinement import DisparityRefinement

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
    """The parts, built by `build_model`, wired as in the paper's Figure A.13. `config` is the
    record of what built them: checkpoints store it and the input checks read its SPP limit."""

    def __init__(self, *, config: ModelConfig, backbone: FeatureTaps,
                 spp_f1: SpatialPyramidPooling, spp_f2: Optional[SpatialPyramidPooling],
                 coarse_segmentation: CoarseSegmentationBranch, disparity: nn.Module,
                 refined_segmentation: RefinedSegmentationBranch,
                 disparity_refinement: Optional[DisparityRefinement] = None) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.spp_f1 = spp_f1
        # F2' feeds the disparity branch only; a cost volume at H/4 matches on F1' instead.
        self.spp_f2 = spp_f2
        self.coarse_segmentation = coarse_segmentation
        self.disparity = disparity
        self.refined_segmentation = refined_segmentation
        self.disparity_refinement = disparity_refinement
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

        # Table A.10, Siamese: shared weights, both views in one batched pass.
        # `coarse_views: 1`: only the left view goes on to F4 (the coarse branch's only reader).
        left_only = self.config.coarse_views == 1
        f1, f2, f4 = self.backbone(torch.cat([left, right], 0),
                                   deep_images=left.shape[0] if left_only else None)
        f1_left, f1_right = self.spp_f1(f1).chunk(2, 0)            # Table A.13: SPP_1^L, SPP_1^R
        f4_left, f4_right = (f4, None) if left_only else f4.chunk(2, 0)
        match_left, match_right = (f1_left, f1_right) if self.spp_f2 is None \
            else self.spp_f2(f2).chunk(2, 0)                       # Table A.12: SPP_2^L, SPP_2^R

        coarse_logits, f_seg = self.coarse_segmentation(f4_left, f4_right, left)      # Table A.11
        disparity, f_disp, disparity_probability = self.disparity(match_left, match_right, f_seg, left)
        if self.disparity_refinement is not None:                  # not in the paper: H/8 -> H/4 -> H
            disparity = self.disparity_refinement(disparity, f1_left, f1_right, left)
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


def initial_weights(config: ModelConfig) -> Optional[str]:
    """The weights a training run starts from: `"imagenet"` where the config's `pretrained`
    asks for them, else None. `pretrained` is a training-recipe flag: `build_model` itself
    never reads it, so rebuilding a trained model from its checkpoint downloads nothing."""
    return "imagenet" if config.pretrained else None


def build_model(config: ModelConfig, *,
                weights: str | WeightsEnum | None = None) -> PMTNet:
    """PMTNet for `config`. `weights`, as in torchvision: None keeps the random
    initialisation (what a checkpoint load wants: its state dict replaces everything);
    "imagenet" loads the backbone's ImageNet entry of `backbone.BACKBONES`; a torchvision
    WeightsEnum member of the backbone's family loads that one. Weights that cannot be had
    (no cache, no network) warn and keep the random initialisation."""
    backbone_weights = _backbone_weights(config.backbone, weights)
    w = config.width           # Appendix A widths scaled by branch_width
    hourglass = dict(hourglass_stride=config.hourglass_stride, separable=config.separable)
    guide = dict(guide_on_pooled_image=config.guide_on_pooled_image)
    convex_scale = config.convex_upsample_scale
    seg_upsample = config.segmentation_upsample_mode

    # Built in this order so that a seeded build draws the same initial weights as ever.
    backbone = FeatureTaps(config.backbone)
    f1_channels, f2_channels, f4_channels = backbone.channels
    spp_f1 = SpatialPyramidPooling(f1_channels, windows=config.spp_f1_windows,
                                   channels=config.spp_channels)
    matches_on_f1 = config.disparity_head == "cost_volume" and config.cost_volume_scale == 4
    spp_f2 = None if matches_on_f1 else SpatialPyramidPooling(
        f2_channels, windows=config.spp_f2_windows, channels=config.spp_channels)
    f2_spp_channels = 0 if spp_f2 is None else spp_f2.out_channels
    f_seg_channels, f_disp_channels = w(32), w(64)

    coarse = CoarseSegmentationBranch(
        f4_channels, reduced_channels=w(64), f_seg_channels=f_seg_channels,
        num_classes=config.num_classes, head_scale=config.coarse_head_scale,
        upsample=seg_upsample, views=config.coarse_views, **guide, **hourglass)
    if config.disparity_head == "regression":
        disparity: nn.Module = DisparityBranch(
            f2_spp_channels, f_seg_channels=f_seg_channels, context_channels=w(128),
            f_disp_channels=f_disp_channels, max_shift=config.corr_max_shift,
            corr_channels=config.corr_channels, use_f_seg=config.fseg_to_disparity,
            head_scale=config.disparity_head_scale, upsample=config.upsample,
            convex_scale=convex_scale, **guide, **hourglass)
    else:
        scale = config.cost_volume_scale
        disparity = CostVolumeDisparityBranch(
            spp_f1.out_channels if scale == 4 else f2_spp_channels,
            context_channels=f_seg_channels, scale=scale, max_disparity=config.max_disparity,
            groups=config.cost_volume_groups, aggregation_channels=config.cost_aggregation_channels,
            fdisp_channels=f_disp_channels,
            upsample=None if config.disparity_refinement_scale else config.upsample,
            correlation=config.cost_volume_correlation,
            soft_argmin_window=config.soft_argmin_window, convex_scale=convex_scale,
            patch_guide_channels=config.disparity_patch_guide_channels, **guide, **hourglass)
    refined = RefinedSegmentationBranch(
        spp_f1.out_channels, f_seg_channels=f_seg_channels, f_disp_channels=f_disp_channels,
        reduced_channels=w(128), s_channels=w(64), head_width=w(32),
        num_classes=config.num_classes, use_task_features=config.fseg_fdisp_to_refined,
        input_scale=config.refined_branch_scale, head_scale=config.refined_head_scale,
        upsample=seg_upsample, **guide, **hourglass)
    refinement = None
    if config.disparity_refinement_scale:
        refinement_convex_scale = config.disparity_refinement_convex_scale or convex_scale
        refinement = DisparityRefinement(spp_f1.out_channels, max_disparity=config.max_disparity,
                                         channels=config.disparity_refinement_channels,
                                         dilations=tuple(config.disparity_refinement_dilations),
                                         convex_scale=refinement_convex_scale,
                                         patch_guide_channels=config.disparity_patch_guide_channels,
                                         propagation=config.disparity_refinement_propagation,
                                         propagation_groups=config.disparity_refinement_propagation_groups)
    model = PMTNet(config=config, backbone=backbone, spp_f1=spp_f1, spp_f2=spp_f2,
                   coarse_segmentation=coarse, disparity=disparity, refined_segmentation=refined,
                   disparity_refinement=refinement)
    if backbone_weights is not None:
        load_imagenet_weights(model.backbone, backbone_weights)
    return model


def _backbone_weights(backbone: str, weights: str | WeightsEnum | None) -> Optional[WeightsEnum]:
    if weights is None:
        return None
    expected = imagenet_weights(backbone)
    if isinstance(weights, str):
        if weights.lower() != "imagenet":
            raise ValueError(f"weights must be None, 'imagenet' or a {type(expected).__name__} "
                             f"member, got {weights!r}")
        return expected
    if not isinstance(weights, type(expected)):
        raise ValueError(f"weights {weights} do not belong to backbone {backbone!r} "
                         f"(expected a {type(expected).__name__} member)")
    return weights


def count_parameters(model: PMTNet) -> dict[str, int]:
    """Unique trainable parameters, and the paper's Siamese count (backbone + SPP twice)."""
    unique = sum(p.numel() for p in model.parameters() if p.requires_grad)
    siamese = sum(p.numel() for m in model.siamese_modules for p in m.parameters() if p.requires_grad)
    return {"unique": unique, "siamese_counted": unique + siamese, "siamese_modules": siamese,
            "heads": unique - siamese}
