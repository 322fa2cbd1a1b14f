"""Siamese feature extractor: one torchvision backbone, tapped at H/4 (F1), H/8 (F2), H/32 (F4).

The same module (same weights) runs on the left and the right image. Each backbone is a table
of three stages; the channel counts of the taps are measured by a dry run, never hard-coded.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch
import torchvision
from torch import nn


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
    "efficientnet_b2": ("efficientnet_b2", "EfficientNet_B2_Weights.IMAGENET1K_V1",
                        _split_features(2, 3)),
}


def load_torchvision_model(name: str, *, pretrained: bool) -> nn.Module:
    """Builds torchvision model `name`; with `pretrained`, its ImageNet weights through the
    weights API (cached under $TORCH_HOME/hub/checkpoints). If they cannot be had (no cache,
    no network) it warns and keeps the random initialisation rather than failing."""
    builder, weights_name, _ = BACKBONES[name]
    if pretrained:
        weights = torchvision.models.get_weight(weights_name)
        try:
            return torchvision.models.get_model(builder, weights=weights)
        except Exception as error:  # URLError, hash mismatch, permission ... all mean "no weights"
            warnings.warn(f"ImageNet weights {weights_name} unavailable ({error.__class__.__name__}: "
                          f"{error}); the {name} backbone starts from random initialisation",
                          RuntimeWarning, stacklevel=2)
    return torchvision.models.get_model(builder, weights=None)


class FeatureTaps(nn.Module):
    """One backbone returning (F1, F2, F4) at H/4, H/8 and H/32."""

    def __init__(self, name: str, *, pretrained: bool) -> None:
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
        self.name = name
        stages = BACKBONES[name][2](load_torchvision_model(name, pretrained=pretrained))
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

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f1 = self.stage1(image)
        f2 = self.stage2(f1)
        f4 = self.stage3(f2)
        return f1, f2, f4
