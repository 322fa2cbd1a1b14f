"""Typed settings for the model and its losses, read from the YAML files under `config/`.

Defaults live once, in `config/`: the dataclasses below only give the settings types, check
them, and turn YAML mappings into objects. Loading is strict: an unknown or missing key is a
`ValueError` that names it, so a typo in a config file never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import typing
from pathlib import Path
from typing import Any, Mapping

import yaml

from .atomic import write_text_atomic

PACKAGE = "pmt_perception"

BACKBONES = ("densenet121", "resnet18", "resnet50", "resnet101", "mobilenet_v3_large",
             "mobilenet_v3_small", "efficientnet_b2")
UPSAMPLE_MODES = ("nearest", "bilinear", "convex")
HOURGLASS_CONVS = ("standard", "separable")
DISPARITY_HEADS = ("regression", "cost_volume")
CORRELATIONS = ("dot", "cosine")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of one PMT variant (see DESIGN.md §3 and config/model/*.yaml)."""

    variant: str
    num_classes: int
    backbone: str
    pretrained: bool
    # Spatial pyramid pooling: fixed AvgPool2d(k, k) windows on F1 (H/4) and F2 (H/8).
    spp_f1_windows: tuple[int, ...]
    spp_f2_windows: tuple[int, ...]
    spp_channels: int
    # 1-D horizontal correlation on F2' with shifts -max_shift..+max_shift at H/8.
    corr_max_shift: int
    corr_channels: int
    # 1 reproduces the published graph (no resolution change); 2 makes each hourglass a true
    # encoder-decoder (two stride-2 convs down, two stride-2 transposed convs up).
    hourglass_stride: int
    # Resolution divisor at which each branch's final hourglass + prediction run (1 = full
    # resolution as published); the prediction is then upsampled with `upsample`.
    coarse_head_scale: int
    disparity_head_scale: int
    refined_head_scale: int
    upsample: str
    # The paper's Table 8 switches.
    fseg_to_disparity: bool
    fseg_fdisp_to_refined: bool
    # Keys added after the first checkpoints shipped. The defaults below exist only so that
    # those checkpoints load with the graph they were trained with; every config/model/*.yaml
    # states them.
    # `separable`: depthwise-separable hourglasses (fewer multiply-adds; slow to train, edge.yaml).
    hourglass_conv: str = "standard"
    # Multiplier on every branch width (64, 32, 128 ... of Appendix A); backbone untouched.
    branch_width: float = 1.0
    # Resolution divisor of the refined-segmentation branch's input s (4 as published; 8
    # average-pools F1' first so its hourglasses run at H/8 and below).
    refined_branch_scale: int = 4
    # `regression` (published: Fdisp -> conv -> pixels) or `cost_volume` (group-wise
    # correlation over 0..max_disparity at H/cost_volume_scale, 3-D aggregation with Fseg
    # context, soft-argmin): matching generalises to real cameras, regression learns priors.
    disparity_head: str = "regression"
    max_disparity: int = 192               # pixels at the input resolution
    cost_volume_scale: int = 4             # 4: matching on F1' (H/4); 8: on F2' (H/8)
    cost_volume_groups: int = 8
    cost_aggregation_channels: int = 16
    # `dot`: GwcNet's mean of feature products. `cosine`: each group's feature vectors are
    # unit-normalised first, so a score is a cosine in [-1, 1] that peaks where the two views
    # match even with untrained features and is blind to a gain difference between cameras;
    # on a 4-image overfit the matching head reached 3.8 px L1 in 40 steps with it, 55 px
    # without.
    cost_volume_correlation: str = "dot"
    # Soft-argmin over the candidates within this many of the most probable one (0: all, the
    # GC-Net expectation). At a depth edge a cell's distribution is bimodal, foreground and
    # background; the full expectation lands between them, wrong for both. No weights: a
    # checkpoint can change it (models/README.md: Aloe D1 36.0 -> 25.2 % with 1).
    soft_argmin_window: int = 0
    # 4: the cost volume's disparity (at H/8) is refined by a residual at H/4 from the warping
    # error of both views' F1' features, then convex-upsampled x4 (network/disparity_refinement.py).
    # 0: none, the volume's disparity is upsampled straight to the input size.
    disparity_refinement_scale: int = 0
    # The refinement stage's width, the dilations of its body's 3x3 convolutions (one layer
    # each) and its convex upsampling factor (null: convex_upsample_scale). The defaults are
    # run 5-7's stage; run 14's light one costs a third of its FLOPs (docs/architecture.md).
    disparity_refinement_channels: int = 24
    disparity_refinement_dilations: tuple[int, ...] = (1, 2, 4, 8, 1)
    disparity_refinement_convex_scale: int | None = None
    # > 0: the stage also tests the disparities of the pixels this many H/4 pixels to the left
    # and to the right of each pixel (PatchMatch's propagation): the cosine correlation of both
    # views' features at each, in `disparity_refinement_propagation_groups` channel groups.
    # Near a depth edge one of them carries the pixel's own surface. 0: the warping error
    # alone (every shipped model). Costs two more (nearest) warps of the right view's features.
    disparity_refinement_propagation: int = 0
    disparity_refinement_propagation_groups: int = 4
    # Upsampling of the two segmentation heads' logits; None: the same as `upsample`. Convex
    # upsampling of 19 class maps from H/8 was ~40 % of the `edge` frame on a 2-core CPU.
    segmentation_upsample: str | None = None
    # Cuts of memory-bound work that FLOP counts miss (docs/performance.md, "Where edge stands"):
    # `guide_on_pooled_image`: each head's L conv runs on the left image pooled to its grid
    # instead of at full resolution (pooled after, as published).
    guide_on_pooled_image: bool = False
    # Learned convex upsampling by this factor only, bilinear for the rest of a head's scale
    # (null: convex all the way). Convex upsampling moves 9 weights per pixel it writes.
    convex_upsample_scale: int | None = None
    # 2: the coarse branch reads cat(F4_L, F4_R) (Table A.11); 1: F4_L only, and the right
    # view stops at F2, the deepest feature matching reads.
    coarse_views: int = 2
    # > 0: the convex upsampling of the cost-volume disparity (or of its H/4 refinement) also
    # reads this many features of each s x s patch of the left image (network/blocks.py,
    # PatchGuide), so its weights can put a depth edge where it runs inside a cell. 0: the
    # head's features and L conv only.
    disparity_patch_guide_channels: int = 0

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone {self.backbone!r} is not one of {BACKBONES}")
        if self.upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample {self.upsample!r} is not one of {UPSAMPLE_MODES}")
        if self.hourglass_stride not in (1, 2):
            raise ValueError(f"hourglass_stride must be 1 or 2, got {self.hourglass_stride}")
        for name in ("coarse_head_scale", "disparity_head_scale", "refined_head_scale"):
            if getattr(self, name) not in (1, 2, 4, 8):
                raise ValueError(f"{name} must be 1, 2, 4 or 8, got {getattr(self, name)}")
        if self.hourglass_conv not in HOURGLASS_CONVS:
            raise ValueError(f"hourglass_conv {self.hourglass_conv!r} is not one of {HOURGLASS_CONVS}")
        if self.disparity_head not in DISPARITY_HEADS:
            raise ValueError(f"disparity_head {self.disparity_head!r} is not one of {DISPARITY_HEADS}")
        if not 0.1 <= self.branch_width <= 4:
            raise ValueError(f"branch_width must be in [0.1, 4], got {self.branch_width}")
        if self.refined_branch_scale not in (4, 8):
            raise ValueError(f"refined_branch_scale must be 4 or 8, got {self.refined_branch_scale}")
        if self.cost_volume_scale not in (4, 8):
            raise ValueError(f"cost_volume_scale must be 4 or 8, got {self.cost_volume_scale}")
        if self.max_disparity < 2 * self.cost_volume_scale:
            raise ValueError(f"max_disparity must be >= {2 * self.cost_volume_scale} (two "
                             f"candidates at H/{self.cost_volume_scale}), got {self.max_disparity}")
        if self.cost_volume_correlation not in CORRELATIONS:
            raise ValueError(f"cost_volume_correlation {self.cost_volume_correlation!r} is not "
                             f"one of {CORRELATIONS}")
        if self.segmentation_upsample not in (None, *UPSAMPLE_MODES):
            raise ValueError(f"segmentation_upsample {self.segmentation_upsample!r} is not one "
                             f"of {UPSAMPLE_MODES} (or null: the same as upsample)")
        if self.soft_argmin_window < 0:
            raise ValueError(f"soft_argmin_window must be >= 0, got {self.soft_argmin_window}")
        if self.disparity_refinement_scale not in (0, 4):
            raise ValueError(f"disparity_refinement_scale must be 0 or 4, got "
                             f"{self.disparity_refinement_scale}")
        if self.disparity_refinement_scale and not (self.disparity_head == "cost_volume"
                                                    and self.cost_volume_scale == 8):
            raise ValueError("disparity_refinement_scale 4 refines a cost volume built at H/8: "
                             "it needs disparity_head cost_volume and cost_volume_scale 8")
        if self.disparity_refinement_channels < 1:
            raise ValueError(f"disparity_refinement_channels must be >= 1, got "
                             f"{self.disparity_refinement_channels}")
        if not self.disparity_refinement_dilations or min(self.disparity_refinement_dilations) < 1:
            raise ValueError(f"disparity_refinement_dilations must be one or more dilations "
                             f">= 1, got {self.disparity_refinement_dilations}")
        if self.disparity_refinement_convex_scale not in (None, 2, 4):
            raise ValueError(f"disparity_refinement_convex_scale must be null, 2 or 4, got "
                             f"{self.disparity_refinement_convex_scale}")
        if self.disparity_refinement_propagation < 0 or self.disparity_refinement_propagation_groups < 1:
            raise ValueError(f"disparity_refinement_propagation must be >= 0 and its groups >= 1, "
                             f"got {self.disparity_refinement_propagation} and "
                             f"{self.disparity_refinement_propagation_groups}")
        if self.convex_upsample_scale not in (None, 2, 4, 8):
            raise ValueError(f"convex_upsample_scale must be null, 2, 4 or 8, got "
                             f"{self.convex_upsample_scale}")
        if self.coarse_views not in (1, 2):
            raise ValueError(f"coarse_views must be 1 or 2, got {self.coarse_views}")
        if self.disparity_patch_guide_channels < 0:
            raise ValueError(f"disparity_patch_guide_channels must be >= 0, got "
                             f"{self.disparity_patch_guide_channels}")
        if self.disparity_patch_guide_channels and not (
                self.disparity_head == "cost_volume"
                and (self.upsample == "convex" or self.disparity_refinement_scale)):
            raise ValueError("disparity_patch_guide_channels guides the convex upsampling of the "
                             "cost volume's disparity: it needs disparity_head cost_volume and "
                             "upsample convex (or disparity_refinement_scale 4, which upsamples "
                             "convexly)")
        if self.cost_volume_groups < 1:
            raise ValueError(f"cost_volume_groups must be >= 1, got {self.cost_volume_groups}")
        if not self.spp_f1_windows or not self.spp_f2_windows:
            raise ValueError("spp_f1_windows and spp_f2_windows must not be empty")

    @property
    def min_input_size(self) -> int:
        """Smallest H and W the fixed SPP windows accept (F1 is H/4, F2 is H/8)."""
        return max(4 * max(self.spp_f1_windows), 8 * max(self.spp_f2_windows), 32)

    def width(self, channels: int) -> int:
        """A branch width of Appendix A scaled by `branch_width` (at least 8 channels)."""
        return max(8, int(round(channels * self.branch_width)))

    @property
    def separable(self) -> bool:
        return self.hourglass_conv == "separable"

    @property
    def segmentation_upsample_mode(self) -> str:
        return self.segmentation_upsample or self.upsample


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Weights of the paper's total loss L = L1 + CE(coarse) + CE(refined) + Lovasz(refined)."""

    disparity_l1: float
    coarse_ce: float
    refined_ce: float
    refined_lovasz: float
    ignore_index: int
    # Kendall et al. (2018) homoscedastic-uncertainty weighting of the three branch losses.
    uncertainty_weighting: bool
    # Cross-entropy of the cost-volume head's candidate distribution against the ground truth
    # (two-bin soft target at H/s). L1 through a soft-argmin alone teaches matching slowly: the
    # expectation starts at the middle of the range and its gradient spreads over every
    # candidate. 0 (the paper) for regression heads. Default for configs older than the key.
    disparity_distribution: float = 0.0
    # One weight per class for both cross-entropies (null: every class 1). Rare, thin classes
    # (the synthetic scenes' poles are 0.5 % of the pixels) get almost no cross-entropy gradient
    # otherwise; the weighted mean divides by the weights of the valid pixels, so the loss
    # keeps its scale. The Lovasz term is already a per-class mean and is not weighted.
    class_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.class_weights is not None:
            weights = tuple(float(w) for w in self.class_weights)
            if not weights or min(weights) < 0 or max(weights) == 0:
                raise ValueError(f"class_weights must be >= 0 with one above 0, got {weights}")
            object.__setattr__(self, "class_weights", weights)


# --------------------------------------------------------------------------- locating files
def share_dir() -> Path:
    """The package's share directory (holds config/, models/, launch/).

    Search order: $PMT_PERCEPTION_SHARE; the source tree (editable/pip -e installs and running
    from a checkout); an ament index (ROS installs); the install prefix this module sits in
    (<prefix>/lib/pythonX.Y/site-packages/pmt_perception -> <prefix>/share/pmt_perception,
    colcon and pip installs alike); sys.prefix/share/pmt_perception.
    """
    env = os.environ.get("PMT_PERCEPTION_SHARE")
    if env:
        return Path(env)
    source_tree = Path(__file__).resolve().parent.parent
    if (source_tree / "config" / "model").is_dir():
        return source_tree
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except Exception:  # not a ROS install, or the package is not in the index
        pass
    install_prefix = Path(__file__).resolve().parents[4] / "share" / PACKAGE
    if (install_prefix / "config").is_dir():
        return install_prefix
    return Path(sys.prefix) / "share" / PACKAGE


def config_dir() -> Path:
    return share_dir() / "config"


def resolve_config_path(name_or_path: str | os.PathLike, kind: str) -> Path:
    """`paper` -> config/<kind>/paper.yaml; an existing path is used as is."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        return path
    candidate = config_dir() / kind / f"{name_or_path}.yaml"
    if not candidate.is_file():
        known = sorted(p.stem for p in (config_dir() / kind).glob("*.yaml"))
        raise ValueError(f"unknown {kind} config {str(name_or_path)!r}; known: {known}")
    return candidate


# --------------------------------------------------------------------------- YAML <-> objects
def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data


def dump_yaml_atomic(data: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write YAML atomically so a reader never sees half a file."""
    write_text_atomic(path, yaml.safe_dump(to_plain(data), sort_keys=False))


def to_plain(value: Any) -> Any:
    """Dataclasses/tuples -> dicts/lists, for YAML, JSON and checkpoints."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def from_dict(cls: type, data: Mapping[str, Any], *, source: str = "config") -> Any:
    """Build dataclass `cls` from a mapping; unknown or missing keys raise ValueError."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown} for {cls.__name__}")
    missing = sorted(f.name for f in dataclasses.fields(cls)
                     if f.name not in data and f.default is dataclasses.MISSING
                     and f.default_factory is dataclasses.MISSING)
    if missing:
        raise ValueError(f"{source}: missing key(s) {missing} for {cls.__name__}")
    values = {}
    for name, raw in data.items():
        hint = hints[name]
        if typing.get_origin(hint) is tuple:
            raw = tuple(raw)
        elif dataclasses.is_dataclass(hint) and isinstance(raw, Mapping):
            raw = from_dict(hint, raw, source=f"{source}.{name}")
        values[name] = raw
    return cls(**values)


def load_model_config(name_or_path: str | os.PathLike = "paper", **overrides: Any) -> ModelConfig:
    """Model settings from config/model/<name>.yaml (or a path), with keyword overrides."""
    path = resolve_config_path(name_or_path, "model")
    data = {**load_yaml(path), **overrides}
    return from_dict(ModelConfig, data, source=str(path))


def load_loss_config(name_or_path: str | os.PathLike = "paper", **overrides: Any) -> LossConfig:
    path = resolve_config_path(name_or_path, "loss")
    data = {**load_yaml(path), **overrides}
    return from_dict(LossConfig, data, source=str(path))
