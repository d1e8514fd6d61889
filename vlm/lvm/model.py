"""The LVM: a Swin-Transformer U-Net (SUNet-style) encoder-decoder for astronomy image stamps.

Seed 000, sections 2-3: the encoder turns a (B, 3, H, W) stamp (g, r, z or rendered RGB, scaled to
[0, 1]) into a pyramid of token grids; the decoder rebuilds the stamp from them through U-Net skip
connections, and the whole model is pretrained by MSE reconstruction. Each stage is a stack of Swin
blocks (window attention, then shifted-window attention, alternating) followed by a 3x3 convolution
on the token grid with a residual around the stage (SwinIR's RSTB). The encoder alone is the feature
extractor of the rest of the project:

    model = LVM(get_config("lvm-small"))
    feats = model.encode(images)          # images: (B, 3, 64, 64) float in [0, 1]
    feats.tokens, feats.pooled            # (B, N, D) bottleneck tokens, (B, D) their mean
    feats.stages                          # [(B, D_i, h_i, w_i), ...] for feature pyramids
    recon = model(images)                 # (B, 3, 64, 64)

Inside the model token grids are kept as (B, H, W, C) so that windows, merges and the 3x3 convs
(channels_last) need no copies. Any H, W that are multiples of `config.size_multiple` work; the weights
do not depend on the input size.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision.ops import StochasticDepth


@dataclass
class LVMConfig:
    """Defaults are the lvm-small preset (vlm/lvm/presets/lvm-small.json)."""

    img_size: int = 64  # the training size; any multiple of size_multiple also runs
    in_chans: int = 3
    patch_size: int = 4  # pixels per token side at the first stage
    embed_dim: int = 48  # D of the first stage; stage i has embed_dim * 2**i
    depths: tuple[int, ...] = (2, 2, 6)  # Swin blocks per stage; decoder stages mirror all but the last
    num_heads: tuple[int, ...] = (2, 4, 8)
    window_size: int = 4  # must divide every stage's grid (so weights fit any input size)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path: float = 0.05  # stochastic depth, rising linearly to this over the encoder blocks

    def __post_init__(self):
        for name in ("depths", "num_heads"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and v >= 1 for v in value):
                raise ValueError(
                    f"LVMConfig.{name} must be a list of positive ints (one per stage), got {value!r}"
                )
            setattr(self, name, tuple(value))
        for name in ("img_size", "in_chans", "patch_size", "embed_dim", "window_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"LVMConfig.{name} must be a positive int, got {value!r}")
        if not self.depths or len(self.depths) != len(self.num_heads):
            raise ValueError(
                f"LVMConfig.depths and num_heads need one entry per stage, got depths={self.depths} "
                f"and num_heads={self.num_heads}"
            )
        for i, (dim, heads) in enumerate(zip(self.feature_dims, self.num_heads, strict=True)):
            if dim % heads:
                raise ValueError(
                    f"stage {i}: dim {dim} (embed_dim * 2**{i}) is not divisible by {heads} heads"
                )
        if self.img_size % self.size_multiple:
            raise ValueError(
                f"img_size {self.img_size} must be a multiple of patch_size * 2**(stages-1) * window_size "
                f"= {self.patch_size} * {2 ** (self.num_stages - 1)} * {self.window_size} = "
                f"{self.size_multiple}, so that every stage's token grid splits into whole windows"
            )
        if not self.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {self.drop_path}")

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def feature_dims(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2**i for i in range(self.num_stages))

    @property
    def size_multiple(self) -> int:
        return self.patch_size * 2 ** (self.num_stages - 1) * self.window_size

    def to_dict(self) -> dict:
        d = asdict(self)
        return {**d, "depths": list(self.depths), "num_heads": list(self.num_heads)}

    @classmethod
    def from_dict(cls, d: dict) -> LVMConfig:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(
                f"unknown LVMConfig fields {sorted(unknown)}; valid: {[f.name for f in fields(cls)]}"
            )
        return cls(**d)


class LVMFeatures(NamedTuple):
    tokens: torch.Tensor  # (B, N, D) tokens of the chosen encoder stage, row-major over the grid
    # (the bottleneck, stage -1, is layer-normed as the decoder sees it; earlier stages are raw)
    grid: tuple[int, int]  # (h, w) of that stage, N = h * w
    pooled: torch.Tensor  # (B, D_last) mean of the bottleneck tokens
    stages: list[torch.Tensor]  # every encoder stage as (B, D_i, h_i, w_i), fine to coarse

    @property
    def stage_means(self) -> torch.Tensor:
        """(B, sum of D_i): each stage's tokens averaged, concatenated. The image-level feature for
        classifiers: finer stages keep the shape detail that the bottleneck's mean washes out."""
        return torch.cat([s.mean(dim=(2, 3)) for s in self.stages], dim=1)

    @property
    def stage_moments(self) -> torch.Tensor:
        """(B, 2 * sum of D_i): each stage's mean and standard deviation over the grid. Neither depends on
        where a galaxy points; the spread keeps the arms, bars and knots that a mean averages away
        (few-shot accuracy at 10 labels per class: 0.81 against the means' 0.76)."""
        return torch.cat([torch.cat(torch.std_mean(s, dim=(2, 3))[::-1], 1) for s in self.stages], 1)


class LVMCheckpointError(ValueError):
    """A saved LVM that cannot be read or does not fit its config; the message names the file."""


# ----------------------------------------------------------------------------- windows


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, ws * ws, C), windows in row-major order within each image."""
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, C)


def window_reverse(windows: torch.Tensor, ws: int, H: int, W: int) -> torch.Tensor:
    """(B * nW, ws * ws, C) -> (B, H, W, C), the exact inverse of window_partition."""
    C = windows.shape[-1]
    x = windows.view(-1, H // ws, W // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, H, W, C)


def shifted_window_mask(H: int, W: int, ws: int, shift: tuple[int, int], device=None) -> torch.Tensor:
    """(nW, N, N) bool, True where two tokens of a window of the rolled grid may attend to each other.

    After rolling the grid by -shift, a window at the bottom/right edge holds tokens from up to
    three regions that were not neighbours in the image; tokens may only attend within their region.
    """
    region = torch.zeros(H, W, dtype=torch.long, device=device)
    for axis, (size, s) in enumerate(((H, shift[0]), (W, shift[1]))):
        bounds = (0, size - ws, size - s) if s else (0,)
        labels = torch.zeros(size, dtype=torch.long, device=device)
        for b in bounds[1:]:
            labels[b:] += 1
        region = region * 3 + (labels[:, None] if axis == 0 else labels[None, :])
    windows = window_partition(region[None, :, :, None], ws).squeeze(-1)  # (nW, N)
    return windows[:, :, None] == windows[:, None, :]


# ----------------------------------------------------------------------------- blocks


class WindowAttention(nn.Module):
    """Multi-head self-attention inside ws x ws windows with a learned relative position bias."""

    def __init__(self, dim: int, heads: int, ws: int, qkv_bias: bool):
        super().__init__()
        self.heads, self.ws = heads, ws
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.relative_bias = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, heads))  # one per offset
        coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]) + (ws - 1)  # (2, N, N), offsets in [0, 2ws-2]
        self.register_buffer("bias_index", rel[0] * (2 * ws - 1) + rel[1], persistent=False)

    def forward(self, x: torch.Tensor, num_windows: int, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B * nW, N, C) windows of N = ws*ws tokens; mask: None or (nW, N, N) additive (0 or -inf)."""
        B_, N, C = x.shape
        shape = (B_ // num_windows, num_windows, N, 3, self.heads, C // self.heads)
        q, k, v = self.qkv(x).view(shape).permute(3, 0, 1, 4, 2, 5)  # each (B, nW, heads, N, C/heads)
        bias = self.relative_bias[self.bias_index].permute(2, 0, 1)  # (heads, N, N)
        if mask is not None:
            bias = bias + mask[:, None]  # (nW, heads, N, N)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, nW, heads, N, C/heads)
        return self.proj(x.transpose(2, 3).reshape(B_, N, C))


class SwinBlock(nn.Module):
    """LN -> (shifted-)window attention -> residual -> LN -> MLP -> residual, on a (B, H, W, C) grid."""

    def __init__(self, dim, heads, ws, shift: bool, mlp_ratio, qkv_bias, drop_path):
        super().__init__()
        self.ws, self.shift = ws, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, ws, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = StochasticDepth(drop_path, "row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        # shift by half a window, but not along an axis that is a single window (nothing to connect)
        half = self.ws // 2 if self.shift else 0
        sh, sw = (half if self.ws < H else 0), (half if self.ws < W else 0)
        y = self.norm1(x)
        mask = None
        if sh or sw:  # roll so that windows straddle the borders of the previous block's windows
            y = torch.roll(y, shifts=(-sh, -sw), dims=(1, 2))
            allowed = shifted_window_mask(H, W, self.ws, (sh, sw), y.device)  # (nW, N, N)
            mask = torch.where(allowed, 0.0, -torch.inf).to(y.dtype)  # additive: blocked pairs get -inf
        num_windows = (H // self.ws) * (W // self.ws)
        y = self.attn(window_partition(y, self.ws), num_windows, mask)  # (B*nW, N, C)
        y = window_reverse(y, self.ws, H, W)  # (B, H, W, C)
        if sh or sw:
            y = torch.roll(y, shifts=(sh, sw), dims=(1, 2))
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Stage(nn.Module):
    """Swin blocks (unshifted, shifted, ...) then a 3x3 conv on the grid, with a residual around it all."""

    def __init__(self, dim, depth, heads, ws, mlp_ratio, qkv_bias, drop_paths):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, heads, ws, i % 2 == 1, mlp_ratio, qkv_bias, drop_paths[i]) for i in range(depth)
        )
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C) -> (B, H, W, C)
        y = x
        for block in self.blocks:
            y = block(y)
        # (B, H, W, C).permute is a channels_last (B, C, H, W): the conv runs without a copy
        return x + self.conv(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class PatchMerging(nn.Module):
    """Down: each 2x2 group of tokens -> one token, (B, H, W, C) -> (B, H/2, W/2, 2C)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        x = x.view(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).reshape(B, H // 2, W // 2, 4 * C)
        return self.reduction(self.norm(x))


class PatchExpand(nn.Module):
    """Up by `scale`: each token -> scale x scale tokens, (B, H, W, C) -> (B, sH, sW, out_dim)."""

    def __init__(self, dim: int, out_dim: int, scale: int = 2):
        super().__init__()
        self.scale, self.out_dim = scale, out_dim
        self.expand = nn.Linear(dim, scale * scale * out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, _ = x.shape
        s, C = self.scale, self.out_dim
        x = self.expand(x).view(B, H, W, s, s, C).permute(0, 1, 3, 2, 4, 5).reshape(B, H * s, W * s, C)
        return self.norm(x)


# ----------------------------------------------------------------------------- the model


class LVM(nn.Module):
    def __init__(self, config: LVMConfig):
        super().__init__()
        self.config = c = config
        dims, S = c.feature_dims, c.num_stages
        n = sum(c.depths)
        rates = [c.drop_path * i / max(n - 1, 1) for i in range(n)]  # linear, as in Swin
        stage_rates = [rates[sum(c.depths[:i]) : sum(c.depths[: i + 1])] for i in range(S)]

        def stage(i):
            return Stage(
                dims[i], c.depths[i], c.num_heads[i], c.window_size, c.mlp_ratio, c.qkv_bias, stage_rates[i]
            )

        self.patch_embed = nn.Conv2d(c.in_chans, c.embed_dim, c.patch_size, stride=c.patch_size)
        self.embed_norm = nn.LayerNorm(c.embed_dim)
        self.encoder = nn.ModuleList(stage(i) for i in range(S))
        self.downs = nn.ModuleList(PatchMerging(dims[i]) for i in range(S - 1))
        self.norm = nn.LayerNorm(dims[-1])  # on the bottleneck
        self.ups = nn.ModuleList(PatchExpand(dims[i + 1], dims[i]) for i in range(S - 1))  # level i+1 -> i
        self.skips = nn.ModuleList(nn.Linear(2 * dims[i], dims[i]) for i in range(S - 1))  # concat -> D_i
        self.decoder = nn.ModuleList(stage(i) for i in range(S - 1))
        self.final_expand = PatchExpand(dims[0], dims[0], scale=c.patch_size)  # back to full resolution
        self.head = nn.Conv2d(dims[0], c.in_chans, 3, padding=1)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, WindowAttention):
            nn.init.trunc_normal_(m.relative_bias, std=0.02)

    @property
    def feature_dims(self) -> tuple[int, ...]:
        return self.config.feature_dims

    def check_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images must be (B, in_chans, H, W) float in [0, 1] (rendered RGB / 255), finite, H and W
        multiples of config.size_multiple. Returns them in the weights' dtype."""
        c = self.config
        m = c.size_multiple
        expected = f"(B, {c.in_chans}, {c.img_size}, {c.img_size}) (or H, W any multiple of {m})"
        if not isinstance(images, torch.Tensor) or not images.is_floating_point():
            got = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a float tensor in [0, 1] (e.g. uint8 RGB / 255), got {got}")
        channels_ok = images.ndim == 4 and images.shape[1] == c.in_chans
        if not channels_ok or images.shape[2] % m or images.shape[3] % m:
            raise ValueError(f"expected images of shape {expected}, got {tuple(images.shape)}")
        if not torch.isfinite(images).all():
            raise ValueError(
                "images contain NaN or inf; NaN pixels never reach the network: fill or mask them first"
            )
        return images.to(self.patch_embed.weight.dtype)

    def _encode_stages(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(self.check_images(images)).permute(0, 2, 3, 1)  # (B, H/p, W/p, D)
        x = self.embed_norm(x)
        feats = []
        for i, stage in enumerate(self.encoder):
            x = stage(x)  # (B, h_i, w_i, D_i)
            if i < len(self.downs):
                feats.append(x)
                x = self.downs[i](x)
        feats.append(self.norm(x))  # the bottleneck
        return feats

    def encode(self, images: torch.Tensor, stage: int = -1) -> LVMFeatures:
        """Encoder features of (B, in_chans, H, W) images in [0, 1]; `stage` picks the tokens
        (-1, the default, is the bottleneck). Only the encoder runs."""
        S = self.config.num_stages
        if not -S <= stage < S:
            raise ValueError(f"stage must be in [{-S}, {S - 1}] for a {S}-stage LVM, got {stage}")
        feats = self._encode_stages(images)
        B, h, w, D = feats[stage].shape
        return LVMFeatures(
            tokens=feats[stage].reshape(B, h * w, D),  # (B, N, D)
            grid=(h, w),
            pooled=feats[-1].mean(dim=(1, 2)),  # (B, D_last)
            stages=[f.permute(0, 3, 1, 2) for f in feats],  # (B, D_i, h_i, w_i), channels_last memory
        )

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W): the MSE pretraining target is the input itself."""
        feats = self._encode_stages(images)
        x = feats[-1]
        for i in reversed(range(len(self.decoder))):
            x = self.ups[i](x)  # (B, h_i, w_i, D_i)
            x = self.skips[i](torch.cat([x, feats[i]], dim=-1))  # U-Net skip: concat + linear
            x = self.decoder[i](x)
        x = self.final_expand(x)  # (B, H, W, D_0)
        return self.head(x.permute(0, 3, 1, 2))  # (B, in_chans, H, W)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(images)

    # ------------------------------------------------------------------------- checkpoints

    def save(self, directory: str | Path) -> Path:
        """Write config.json + model.safetensors into `directory` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu", **overrides) -> LVM:
        """Rebuild a saved LVM. `overrides` change config fields that do not touch the weights
        (img_size, drop_path); the weights are loaded strictly."""
        directory = Path(directory)
        config_path, weights_path = directory / "config.json", directory / "model.safetensors"
        for path in (config_path, weights_path):
            if not path.is_file():
                raise FileNotFoundError(f"LVM checkpoint file missing: {path}")
        try:
            config = LVMConfig.from_dict({**json.loads(config_path.read_text()), **overrides})
        except (ValueError, TypeError) as e:  # JSONDecodeError is a ValueError
            raise LVMCheckpointError(f"bad LVM config {config_path}: {e}") from e
        try:
            state = load_file(weights_path, device=str(device))
        except Exception as e:  # safetensors raises its own SafetensorError on truncated/corrupt files
            raise LVMCheckpointError(f"cannot read LVM weights {weights_path}: {e}") from e
        model = cls(config).to(device)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise LVMCheckpointError(f"weights {weights_path} do not match config {config_path}: {e}") from e
        return model
