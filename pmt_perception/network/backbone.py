"""Siamese feature extractor: one torchvision backbone, tapped at H/4 (F1), H/8 (F2), H/32 (F4).

The same module (same weights) runs on the left and the right image. Each backbone is a table
of three stages; the channel counts of the taps are measured by a dry run, never hard-coded.
As in torchvision, the module is built randomly initialised and never downloads anything:
`load_imagenet_weights` (called by `build_model(..., weights=...)`) brings ImageNet weights.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch
import torchvision
from torch import nn
from torchvision.models import WeightsEnum


def _densenet121_stages(model: nn.Module) -> list[nn.Module]:
    f = model.features
    # Transition layers are tapped before their 2x2 average pool (DESIGN.md §3).
    t1, t2 = f.transition1, f.transition2
    return [
        nn.Sequential(f.conv0, f.norm0, f.relu0, f.pool0, f.denseblock1, t1.norm, t1.relu, t1.conv),
        nn.Sequential(t1.pool, f.denseblock2, t2.norm, t2.relu, t2.conv),
        nn.Sequential(t2.pool, f.denseblock3, f.transition3, f.denseblock4, f.norm5, nn.ReLU()),
    ]


def _resnet_stages(model: nn.Module) -> list[nn.Module]:
    m = model
    return [
        nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1),
        m.layer2,
        nn.Sequential(m.layer3, m.layer4),
    ]


def _split_features(first: int, second: int) -> Callable[[nn.Module], list[nn.Module]]:
    """Stages of a `features` Sequential, cut after indices `first` (H/4) and `second` (H/8)."""
    def stages(model: nn.Module) -> list[nn.Module]:
        f = list(model.features)
        return [nn.Sequential(*f[:first + 1]), nn.Sequential(*f[first + 1:second + 1]),
                nn.Sequential(*f[second + 1:])]
    return stages


# name -> (torchvision builder, ImageNet weights enum member name, stage splitter)
BACKBONES: dict[str, tuple[str, str, Callable[[nn.Module], list[nn.Module]]]] = {
    "densenet121": ("densenet121", "DenseNet121_Weights.IMAGENET1K_V1", _densenet121_stages),
    "resnet18": ("resnet18", "ResNet18_Weights.IMAGENET1K_V1", _resnet_stages),
    "resnet50": ("resnet50", "ResNet50_Weights.IMAGENET1K_V2", _resnet_stages),
    "resnet101": ("resnet101", "ResNet101_Weights.IMAGENET1K_V2", _resnet_stages),
    "mobilenet_v3_large": ("mobilenet_v3_large", "MobileNet_V3_Large_Weights.IMAGENET1K_V2",
                           _split_features(3, 6)),
    "mobilenet_v3_small": ("mobilenet_v3_small", "MobileNet_V3_Small_Weights.IMAGENET1K_V1",
                           _split_features(1, 3)),
    "efficientnet_b2": ("efficientnet_b2", "EfficientNet_B2_Weights.IMAGENET1K_V1",
                        _split_features(2, 3)),
}


def build_torchvision_model(name: str) -> nn.Module:
    """Torchvision model `name` with its random initialisation: nothing is downloaded here."""
    return torchvision.models.get_model(BACKBONES[name][0], weights=None)


def imagenet_weights(name: str) -> WeightsEnum:
    """The ImageNet weights entry of torchvision's weights API for backbone `name`."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return torchvision.models.get_weight(BACKBONES[name][1])


class FeatureTaps(nn.Module):
    """One backbone returning (F1, F2, F4) at H/4, H/8 and H/32 (Table A.10), randomly
    initialised: pretrained weights come from outside (`load_imagenet_weights`)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
        self.name = name
        stages = BACKBONES[name][2](build_torchvision_model(name))
        self.stage1, self.stage2, self.stage3 = stages
        self.channels = self._measure_channels()

    @torch.no_grad()
    def _measure_channels(self) -> tuple[int, int, int]:
        was_training = self.training
        self.eval()
        probe = torch.zeros(1, 3, 64, 64, device=next(self.parameters()).device)
        channels = tuple(int(f.shape[1]) for f in self(probe))
        self.train(was_training)
        return channels  # type: ignore[return-value]

    def load_torchvision_state(self, model: nn.Module) -> None:
        """Copies the weights of a torchvision model of this backbone's kind into the taps
        (the same stage split maps its modules onto ours one to one)."""
        for ours, theirs in zip((self.stage1, self.stage2, self.stage3), BACKBONES[self.name][2](model)):
            ours.load_state_dict(theirs.state_dict())

    def forward(self, image: torch.Tensor, deep_images: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`deep_images`: F4 of the first this many images of the batch only (the others stop
        at F2: a right view whose F4 nothing reads)."""
        f1 = self.stage1(image)   # Table A.10: F1, H/4
        f2 = self.stage2(f1)      # F2, H/8
        f4 = self.stage3(f2 if deep_images is None else f2[:deep_images])  # F4, H/32
        return f1, f2, f4


def load_imagenet_weights(taps: FeatureTaps, weights: WeightsEnum | None = None) -> bool:
    """Loads ImageNet `weights` (default: the backbone's entry of BACKBONES) into `taps`
    through torchvision's weights API (cached under $TORCH_HOME/hub/checkpoints). If they
    cannot be had (no cache, no network) it warns and keeps the random initialisation rather
    than failing, and returns False."""
    weights = weights or imagenet_weights(taps.name)
    try:
        # torchvision's builder, not a bare state-dict load: it also renames the keys of
        # older checkpoints (DenseNet's "norm.1" style) before loading them.
        source = torchvision.models.get_model(BACKBONES[taps.name][0], weights=weights)
    except Exception as error:  # URLError, hash mismatch, permission ... all mean "no weights"
        warnings.warn(f"ImageNet weights {weights} unavailable ({error.__class__.__name__}: "
                      f"{error}); the {taps.name} backbone starts from random initialisation",
                      RuntimeWarning, stacklevel=2)
        return False
    taps.load_torchvision_state(source)
    return True
