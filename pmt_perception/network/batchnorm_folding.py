"""Inference-time BatchNorm folding: conv -> BN becomes one conv with a bias.

In eval mode BatchNorm is a fixed per-channel affine map, so folding it into the convolution
before it is exact (up to float rounding) and removes one full pass over every feature map.
On a CPU, where BN + ReLU + copies cost more than the convolutions of this network, that is
a large share of the frame time. Pre-activation BNs (DenseNet's BN -> ReLU -> conv) have a
ReLU between them and the next conv and are left as they are.
"""
from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .blocks import DeconvBNReLU


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(bn, nn.BatchNorm2d)
            and bn.track_running_stats and conv.out_channels == bn.num_features)


def _fold_pair(owner: nn.Module, conv_name: str, bn_name: str) -> bool:
    conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
    if not _foldable(conv, bn):
        return False
    fused = fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))
    setattr(owner, conv_name, fused)
    setattr(owner, bn_name, nn.Identity())
    return True


# Attribute pairs (conv, bn) of torchvision blocks that are not plain Sequentials.
_NAMED_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"), ("deconv", "bn"),
                ("spatial", "spatial_bn"), ("along_d", "along_d_bn"))   # cost_volume.FactorizedConv3d


def fold_batchnorm(model: nn.Module, *, inplace: bool = False) -> tuple[nn.Module, int]:
    """Returns (model with every conv -> BN pair folded, number of pairs folded). The model
    must be in eval mode: training needs the BN statistics."""
    if model.training:
        raise ValueError("fold_batchnorm needs an eval-mode model (call .eval() first)")
    if not inplace:
        model = copy.deepcopy(model)
    folded = 0
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for first, second in zip(names, names[1:]):
                folded += _fold_pair(module, first, second)
        elif isinstance(module, DeconvBNReLU) or any(
                hasattr(module, a) and hasattr(module, b) for a, b in _NAMED_PAIRS):
            for conv_name, bn_name in _NAMED_PAIRS:
                if hasattr(module, conv_name) and hasattr(module, bn_name):
                    folded += _fold_pair(module, conv_name, bn_name)
    return model, folded
