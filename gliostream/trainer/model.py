"""The 3D Res-UNet of the reference design, with deep-supervision heads."""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig


class ResidualBlock(nn.Module):
    """Two 3×3×3 convolutions with InstanceNorm, plus a (projected) skip; strided to downsample."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.InstanceNorm3d(cout, affine=True)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = nn.InstanceNorm3d(cout, affine=True)
        self.act = nn.LeakyReLU(0.01, inplace=True)
        self.skip = (nn.Identity() if cin == cout and stride == 1 else
                     nn.Sequential(nn.Conv3d(cin, cout, 1, stride=stride, bias=False), nn.InstanceNorm3d(cout, affine=True)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.act(out + self.skip(x))


class ResUNet(nn.Module):
    """Encoder of residual blocks (stride-2 convolutions between levels), a bottleneck, and a
    decoder of transposed-convolution upsampling + skip concatenation + residual block.

    In training mode `forward` returns [full, 1/2, 1/4] resolution logits (deep supervision);
    in eval mode only the full-resolution logits.
    """

    def __init__(self, config: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        self.config = config
        w = config.widths
        self.encoder = nn.ModuleList(
            [ResidualBlock(config.in_channels, w[0])] + [ResidualBlock(w[i - 1], w[i], stride=2) for i in range(1, len(w))]
        )
        self.up = nn.ModuleList([nn.ConvTranspose3d(w[i + 1], w[i], 2, stride=2) for i in reversed(range(config.levels))])
        self.decoder = nn.ModuleList([ResidualBlock(2 * w[i], w[i]) for i in reversed(range(config.levels))])
        self.head = nn.Conv3d(w[0], config.classes, 1)
        self.ds_heads = nn.ModuleList([nn.Conv3d(w[i], config.classes, 1) for i in range(1, config.deep_supervision + 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        decoded = []
        for up, block in zip(self.up, self.decoder, strict=True):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
            decoded.append(x)
        logits = self.head(x)
        if not self.training or not self.ds_heads:
            return logits
        # decoded[-1] is full resolution, decoded[-2] 1/2, decoded[-3] 1/4
        return [logits] + [head(decoded[-2 - i]) for i, head in enumerate(self.ds_heads)]


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
