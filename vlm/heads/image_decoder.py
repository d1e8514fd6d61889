"""Image-to-image head: a convolutional decoder from the LVM's feature pyramid back to pixels.

Used for restoration (deblurring and denoising) and for reconstruction of masked images (seed 000,
3.1: "a decoder module with convolutional layers following the LVM"). The encoder stages, fine to
coarse, are merged top-down as in an FPN (1x1 projection, upsample, add, 3x3 conv), upsampled from
the first stage's token grid to full resolution, and joined there with a few convolutions of the
degraded image itself, since the token grid is `patch_size` times coarser than the pixels. The head
predicts a correction that is added to the degraded input; its last layer starts at zero, so an
untrained head returns the input unchanged and training can only move away from that baseline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.GELU())


class ImageDecoderHead(nn.Module):
    def __init__(self, feature_dims: tuple[int, ...], patch_size: int, out_chans: int = 3, width: int = 64):
        super().__init__()
        self.patch_size = patch_size
        self.lateral = nn.ModuleList(nn.Conv2d(d, width, 1) for d in feature_dims)
        self.smooth = nn.ModuleList(conv_block(width, width) for _ in feature_dims[:-1])
        self.pixels = conv_block(out_chans, width // 2)  # the full-resolution view of the input
        self.fuse = nn.Sequential(
            conv_block(width + width // 2, width // 2), conv_block(width // 2, width // 2)
        )
        self.out = nn.Conv2d(width // 2, out_chans, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, stages: list[torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        """stages: (B, D_i, h_i, w_i) fine to coarse (LVMFeatures.stages); images: (B, C, H, W), the
        degraded input the stages were computed from. Returns the (B, C, H, W) restored image."""
        x = self.lateral[-1](stages[-1])
        for i in reversed(range(len(stages) - 1)):
            x = F.interpolate(x, size=stages[i].shape[-2:], mode="bilinear", align_corners=False)
            x = self.smooth[i](x + self.lateral[i](stages[i]))
        x = F.interpolate(x, size=images.shape[-2:], mode="bilinear", align_corners=False)
        x = self.fuse(torch.cat([x, self.pixels(images)], dim=1))
        return images + self.out(x)
