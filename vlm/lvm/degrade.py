"""The degradations of seed 000's restoration and reconstruction tasks, on batches of images in [0, 1].

    g = torch.Generator().manual_seed(0)
    blurred = blur_and_noise(images, g)           # Moffat PSF of FWHM 2-8 px, Gaussian noise sigma 1-15 / 255
    masked, mask = mask_patches(images, g)        # 0-70 % of the image hidden in 4, 8 or 16 px patches

The paper states the noise sigma on 8-bit pixel values ("uniformly distributed between 1.0 and 15.0"),
so it is divided by 255 here. Everything is drawn from the caller's generator: a fixed generator gives
a fixed test set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Degradation:
    fwhm_px: tuple[float, float] = (2.0, 8.0)  # Moffat PSF FWHM range
    moffat_beta: float = 3.5
    noise_sigma: tuple[float, float] = (1.0 / 255, 15.0 / 255)  # Gaussian noise sigma range
    mask_fraction: tuple[float, float] = (0.0, 0.7)  # share of the image hidden
    mask_patches: tuple[int, ...] = (4, 8, 16)  # patch sides, px


def _uniform(n: int, bounds: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    lo, hi = bounds
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def moffat_kernels(fwhm: torch.Tensor, beta: float, size: int) -> torch.Tensor:
    """(B,) FWHMs -> (B, size, size) normalised circular Moffat PSFs (as data_builders.sim.psf)."""
    alpha = fwhm / (2.0 * (2.0 ** (1.0 / beta) - 1.0) ** 0.5)  # (B,)
    r = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    rr2 = r[None, :] ** 2 + r[:, None] ** 2  # (size, size)
    kernels = (1.0 + rr2[None] / alpha[:, None, None] ** 2) ** (-beta)
    return kernels / kernels.sum(dim=(1, 2), keepdim=True)


def blur(images: torch.Tensor, fwhm: torch.Tensor, beta: float = 3.5) -> torch.Tensor:
    """Each (C, H, W) image convolved with its own Moffat PSF; edges reflect (a stamp's sky goes on)."""
    B, C, H, W = images.shape
    size = min(2 * int(2.5 * float(fwhm.max()) + 0.5) + 1, 2 * min(H, W) - 1)
    pad = size // 2
    kernels = moffat_kernels(fwhm.float(), beta, size).to(images)  # (B, k, k)
    weight = kernels.repeat_interleave(C, dim=0)[:, None]  # (B*C, 1, k, k): one group per image band
    x = F.pad(images.reshape(1, B * C, H, W), (pad, pad, pad, pad), mode="reflect")
    return F.conv2d(x, weight, groups=B * C).reshape(B, C, H, W)


def blur_and_noise(
    images: torch.Tensor, generator: torch.Generator, spec: Degradation = Degradation()
) -> torch.Tensor:
    """Seed 000's restoration input: Moffat blur, then Gaussian noise, clipped to [0, 1]."""
    B = images.shape[0]
    blurred = blur(images, _uniform(B, spec.fwhm_px, generator), spec.moffat_beta)
    sigma = _uniform(B, spec.noise_sigma, generator).to(images)[:, None, None, None]
    noise = torch.randn(images.shape, generator=generator).to(images)
    return (blurred + sigma * noise).clamp_(0.0, 1.0)


def patch_mask(
    B: int,
    H: int,
    W: int,
    fraction: torch.Tensor,
    patch: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """(B, 1, H, W) bool, True where hidden: each image hides a random `fraction` of its patch x patch
    cells (the last row/column of cells may be cut by the border)."""
    mask = torch.zeros(B, 1, H, W, dtype=torch.bool)
    for b in range(B):
        p = int(patch[b])
        gh, gw = -(-H // p), -(-W // p)
        hidden = torch.rand(gh * gw, generator=generator).argsort()[: round(float(fraction[b]) * gh * gw)]
        cells = torch.zeros(gh * gw, dtype=torch.bool)
        cells[hidden] = True
        grid = cells.reshape(1, gh, gw).repeat_interleave(p, 1).repeat_interleave(p, 2)
        mask[b] = grid[:, :H, :W]
    return mask


def mask_patches(
    images: torch.Tensor,
    generator: torch.Generator,
    spec: Degradation = Degradation(),
    fraction: float | None = None,
    patch: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seed 000's reconstruction input: hidden patches set to 0. `fraction` / `patch` fix what is
    otherwise drawn per image (uniform in spec.mask_fraction, one of spec.mask_patches)."""
    B, _, H, W = images.shape
    fractions = (
        torch.full((B,), fraction) if fraction is not None else _uniform(B, spec.mask_fraction, generator)
    )
    if patch is not None:
        patches = torch.full((B,), patch)
    else:
        choice = torch.randint(len(spec.mask_patches), (B,), generator=generator)
        patches = torch.tensor(spec.mask_patches)[choice]
    mask = patch_mask(B, H, W, fractions, patches, generator).to(images.device)
    return images.masked_fill(mask, 0.0), mask
