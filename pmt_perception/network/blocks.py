"""Building blocks shared by the three PMT branches: conv-BN-ReLU, hourglass, SPP, correlation,
and the output upsamplers."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def resize(x: torch.Tensor, size: tuple[int, int], mode: str = "nearest") -> torch.Tensor:
    """Resize to an explicit size (never a scale factor), so any input H, W lines up."""
    # The no-op shortcut is skipped while tracing: a trace would freeze it for every size.
    if not torch.jit.is_tracing() and tuple(x.shape[-2:]) == tuple(size):
        return x
    align = False if mode == "bilinear" else None
    return F.interpolate(x, size=size, mode=mode, align_corners=align)


class ConvBNReLU(nn.Sequential):
    """k x k convolution ('same' padding) without bias, then BatchNorm and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int = 3,
                 stride: int = 1, dilation: int = 1) -> None:
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                      dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class SeparableConvBNReLU(nn.Sequential):
    """Depthwise k x k conv (BN, ReLU), then pointwise 1 x 1 conv (BN, ReLU): MobileNet's
    factorisation, about k*k times fewer multiply-adds than ConvBNReLU at equal widths, which
    is what lets the `edge` variant keep every PMT hourglass on a CPU budget."""

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int = 3,
                 stride: int = 1) -> None:
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, in_channels, kernel_size, stride=stride, padding=padding,
                      groups=in_channels, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UpsampleSeparableBNReLU(nn.Module):
    """The separable hourglass's decoder step: nearest x stride to the skip connection's size,
    then a separable conv. Replaces a transposed conv, which has no cheap depthwise form."""

    def __init__(self, channels: int, *, kernel_size: int) -> None:
        super().__init__()
        self.conv = SeparableConvBNReLU(channels, channels, kernel_size=kernel_size)

    def forward(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return self.conv(resize(x, like.shape[-2:], "nearest"))


class PointwiseReLU(nn.Sequential):
    """1 x 1 convolution with bias, then ReLU: the branches' channel reducers ("conv1D")."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.Conv2d(in_channels, out_channels, 1), nn.ReLU(inplace=True))


class DeconvBNReLU(nn.Module):
    """Transposed k x k convolution, BatchNorm, ReLU. With stride 2 it always doubles the size
    (output_padding 1) and is cropped to the skip connection's size: a crop exports to ONNX
    with dynamic H, W, where `output_size` would freeze the trace-time padding."""

    def __init__(self, channels: int, *, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose2d(channels, channels, kernel_size, stride=stride,
                                         padding=(kernel_size - 1) // 2,
                                         output_padding=stride - 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        x = self.deconv(x)[..., : like.shape[-2], : like.shape[-1]]
        return torch.relu_(self.bn(x))


class Hourglass(nn.Module):
    """The paper's hourglass: convs c1, c2, c3, transposed convs d3, d4, residual adds
    d3 + c2 and d4 + c1, and (when `final_layer`) one more transposed conv d5.

    With stride 1 this is exactly the authors' published block, which never changes
    resolution. With stride 2 it is the encoder-decoder the paper's text describes: c2 and c3
    halve the resolution, d3 and d4 restore it (the `fast` variant).

    The published code always builds d5 and skips it when `lastLayer=False`, leaving dead
    parameters; here d5 exists only when it is used.

    With `separable`, every conv is depthwise-separable and every transposed conv is a
    nearest upsample + separable conv (the `edge` variant); the c/d structure and the residual
    adds stay.
    """

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int = 3,
                 stride: int = 1, final_layer: bool = True, separable: bool = False) -> None:
        super().__init__()
        k = kernel_size
        conv = SeparableConvBNReLU if separable else ConvBNReLU

        def up(step: int) -> nn.Module:
            if separable:
                return UpsampleSeparableBNReLU(out_channels, kernel_size=k)
            return DeconvBNReLU(out_channels, kernel_size=k, stride=step)

        self.c1 = conv(in_channels, out_channels, kernel_size=k)
        self.c2 = conv(out_channels, out_channels, kernel_size=k, stride=stride)
        self.c3 = conv(out_channels, out_channels, kernel_size=k, stride=stride)
        self.d3 = up(stride)
        self.d4 = up(stride)
        self.d5 = up(1) if final_layer else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.c1(x)
        x2 = self.c2(x1)
        x3 = self.c3(x2)
        x = self.d3(x3, like=x2) + x2
        x = self.d4(x, like=x1) + x1
        if self.d5 is not None:
            x = self.d5(x, like=x)
        return x


class SpatialPyramidPooling(nn.Module):
    """Fixed-window SPP as published: per window k, AvgPool2d(k, k) -> 3x3 conv-BN-ReLU ->
    bilinear upsample; all concatenated after the input. Windows are fixed sizes (not adaptive
    bins), so the feature map must be at least max(windows) on each side."""

    def __init__(self, in_channels: int, *, windows: tuple[int, ...], channels: int) -> None:
        super().__init__()
        self.windows = tuple(windows)
        self.levels = nn.ModuleList(
            nn.Sequential(nn.AvgPool2d(k, k), ConvBNReLU(in_channels, channels))
            for k in self.windows)
        self.out_channels = in_channels + channels * len(self.windows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        # Tables A.12 / A.13, SPP: [avgPool(k, k), conv2D(3x3, 32)] per window, and F itself
        return torch.cat([x] + [resize(level(x), size, "bilinear") for level in self.levels], 1)


def correlation_1d(left: torch.Tensor, right: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Horizontal correlation: channel s holds sum_c left(y, x) * right(y, x + s - max_shift),
    for s = 0..2*max_shift (zero outside the image). Raw sum over channels, as published.

    Plain PyTorch: one padded copy of `right` and 2*max_shift+1 slices; no compiled extension.
    """
    width = left.shape[-1]
    padded = F.pad(right, (max_shift, max_shift))
    return torch.stack(
        [(left * padded[..., s:s + width]).sum(1) for s in range(2 * max_shift + 1)], dim=1)


def bilinear_phase_weights(factor: int) -> torch.Tensor:
    """factor x 3: the weights on the neighbours (-1, 0, +1) of source pixel i that give output
    pixel factor * i + p of a bilinear upsampling by `factor` (half-pixel centres, as
    F.interpolate with align_corners=False)."""
    weights = torch.zeros(factor, 3)
    for phase in range(factor):
        offset = (phase + 0.5) / factor - 0.5          # source position minus i, in (-0.5, 0.5)
        if offset < 0:
            weights[phase, 0], weights[phase, 1] = -offset, 1 + offset
        else:
            weights[phase, 1], weights[phase, 2] = 1 - offset, offset
    return weights


class BilinearByPhases(nn.Module):
    """F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False), computed
    as a fixed 3x3 convolution into factor x factor phase maps and a pixel shuffle. The same
    values (edge pixels clamp, as interpolate's do), no weights; OpenVINO's Interpolate of the
    one-channel disparity took 2.7 ms at 480x736 on a 2-core CPU, this far less."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor
        taps = bilinear_phase_weights(factor)
        kernel = torch.einsum("pi,qj->pqij", taps, taps).reshape(factor * factor, 1, 3, 3)
        self.register_buffer("kernel", kernel, persistent=False)   # a constant, not a weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # Channels folded into the batch: one constant kernel serves any channel count.
        single = F.pad(x.reshape(b * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
        phases = F.conv2d(single, self.kernel.to(x.dtype))
        return F.pixel_shuffle(phases, self.factor).reshape(b, c, h * self.factor, w * self.factor)


def pool_image(image: torch.Tensor, scale: int) -> torch.Tensor:
    """avg_pool2d(image, scale, scale, ceil_mode=True) of a B x 3 x H x W image: the mean of
    each scale x scale patch (the last, partial patches: of their pixels). Exported graphs get
    it as a stride-`scale` convolution with constant weights, divided by each patch's pixel
    count: OpenVINO ran the pooling of a 3-channel image only after reordering it into a
    16-channel blocked layout (~1.5 ms of a 35 ms `edge` frame, 2 cores); a convolution reads
    the layout the patch guide's convolution already reads."""
    if not torch.onnx.is_in_onnx_export():
        return F.avg_pool2d(image, scale, scale, ceil_mode=True)
    channels = 3   # a constant: a traced image.shape[1] would make the kernel's shape unknown
    # Zeros right and below: windows from 0, every scale, ceil(H / scale) of them (a constant
    # padding: a size-dependent one would leave the exporter without the tensor's rank).
    pad = (0, scale - 1, 0, scale - 1)
    ones = torch.ones(channels, 1, scale, scale, dtype=image.dtype, device=image.device)
    sums = F.conv2d(F.pad(image, pad), ones, stride=scale, groups=channels)
    # Pixels per patch: (rows in its band) x (columns in its band), each counted along one
    # image column / row of ones (H + W values a frame, not a full-size map).
    column = torch.ones_like(image[:1, :1, :, :1])
    row = torch.ones_like(image[:1, :1, :1, :])
    rows = F.conv2d(F.pad(column, (0, 0, 0, scale - 1)), ones[:1, :, :, :1], stride=(scale, 1))
    columns = F.conv2d(F.pad(row, (0, scale - 1)), ones[:1, :, :1, :], stride=(1, scale))
    return sums / (rows * columns)


class LConv(ConvBNReLU):
    """The paper's per-branch "L conv": conv2D(5x5, dilation 2, 1 channel) of the left image,
    brought to a head's grid (ceil(H/s) x ceil(W/s)) by average pooling.

    `on_pooled_image`: the image is pooled first and the conv runs on the head's grid. As
    published the conv runs at full resolution and its one output channel is pooled after: on
    a 2-core CPU that single 1-channel map cost 2.5 ms of a 47 ms `edge` frame (OpenVINO bf16,
    480x720), all of it memory traffic, for a guide that ends up at H/8 anyway. (A subclass
    of ConvBNReLU so that checkpoints keep their `l_conv.0.weight` keys.)"""

    def __init__(self, *, on_pooled_image: bool = False) -> None:
        super().__init__(3, 1, kernel_size=5, dilation=2)
        self.on_pooled_image = on_pooled_image

    def forward(self, left: torch.Tensor, scale: int = 1) -> torch.Tensor:
        # Fixed-kernel pooling (not adaptive): exports with dynamic H, W.
        if scale == 1:
            return super().forward(left)
        if self.on_pooled_image:
            return super().forward(pool_image(left, scale))
        return F.avg_pool2d(super().forward(left), scale, scale, ceil_mode=True)


class PatchGuide(nn.Module):
    """Convex-mask logits from the left image's own s x s patches, added to those the head's
    features give. A head at H/8 knows that a cell holds a depth edge, not where in the cell
    it runs; the patch's pixels do (on Aloe, 82 % of run 10's disparity errors lie within
    8 px of a depth edge: the foreground grows into the background). A stride-s
    convolution reads each patch once (one Conv node; no full-resolution feature map), a 3x3
    layer sees the neighbouring patches the weights choose between. The last layer starts at
    zero, so a checkpoint that gains the guide computes what it did before."""

    def __init__(self, channels: int, *, scale: int, mask_channels: int) -> None:
        super().__init__()
        self.patches = nn.Sequential(
            nn.Conv2d(3, channels, scale, stride=scale, bias=False),
            nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            ConvBNReLU(channels, channels))
        self.to_mask = nn.Conv2d(channels, mask_channels, 1)
        nn.init.zeros_(self.to_mask.weight)
        nn.init.zeros_(self.to_mask.bias)

    def forward(self, image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        # floor(H / s) patches; the head grid is ceil(H / s): equal when s divides H (the
        # Predictor pads to multiples of 32), else the last partial patch repeats its neighbour.
        return resize(self.to_mask(self.patches(image)), size, "nearest")


class Upsampler(nn.Module):
    """Brings a head's prediction from its working resolution to the output size.

    `nearest`/`bilinear` are fixed interpolations. `convex` is RAFT's learned convex
    upsampling: each output pixel is a softmax-weighted mix of the 3x3 low-resolution
    neighbourhood, with weights predicted from the head's features, so edges stay sharp.
    `convex_scale` < `scale`: convex by `convex_scale` only, bilinear for the rest (convex
    upsampling moves 9 weights per output pixel; x4 of x8 moves a quarter of them).
    """

    def __init__(self, mode: str, *, feature_channels: int, scale: int,
                 convex_scale: int | None = None, patch_guide_channels: int = 0) -> None:
        super().__init__()
        self.mode, self.scale = mode, scale
        self.convex_scale = min(convex_scale or scale, scale)
        self.mask = self.rest = self.patch_guide = None
        if mode == "convex" and scale > 1:
            if self.convex_scale < scale:   # bilinear for the rest of the scale
                self.rest = BilinearByPhases(scale // self.convex_scale)
            self.mask = nn.Sequential(
                ConvBNReLU(feature_channels, feature_channels),
                nn.Conv2d(feature_channels, 9 * self.convex_scale ** 2, 1))
            if patch_guide_channels:
                self.patch_guide = PatchGuide(patch_guide_channels, scale=scale,
                                              mask_channels=9 * self.convex_scale ** 2)

    def forward(self, prediction: torch.Tensor, features: torch.Tensor,
                size: tuple[int, int], image: torch.Tensor | None = None) -> torch.Tensor:
        """`image`: the full-resolution left image, read by the patch guide (when there is one)."""
        if self.mask is None:
            return resize(prediction, size, "bilinear" if self.mode == "convex" else self.mode)
        b, c, h, w = prediction.shape
        s = self.convex_scale
        mask = self.mask(features)
        if self.patch_guide is not None:
            mask = mask + self.patch_guide(image, (h, w)).to(mask.dtype)
        weights = mask.view(b, 9, s * s, h, w).softmax(dim=1)
        neighbours = F.unfold(prediction, 3, padding=1).view(b, c, 9, h, w)
        if c == 1:
            # One channel (a disparity): each output phase is a weighted sum of the 9
            # neighbours. Multiply-and-sum exports as element-wise ops; the batched (s*s x 9) @
            # (9 x 1) product below cost OpenVINO 1.1 ms of run 14's 480x720 frame (2 cores).
            up = F.pixel_shuffle((weights * neighbours.view(b, 9, 1, h, w)).sum(1), s)
        else:
            # One (s*s x 9) @ (9 x c) product per low-resolution pixel: broadcasting the product
            # instead materialises b*c*9*s*s*h*w values (236 MB for 19 classes at s = 8, 480x720),
            # which made the segmentation heads the slowest part of the `edge` variant.
            up = torch.matmul(weights.permute(0, 3, 4, 2, 1), neighbours.permute(0, 3, 4, 2, 1))
            up = up.view(b, h, w, s, s, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h * s, w * s)
        if self.rest is not None:
            up = self.rest(up)
        # The head grid is ceil(H / s): low-res pixel j covers full-res j*s .. j*s+s-1, so
        # the exact output is a crop of the top-left H x W.
        return up[..., : size[0], : size[1]]
