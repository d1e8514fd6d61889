"""Pretraining images for the LVM: a cached pool of rendered stamps, its held-out split, augmentation.

    pool = build_pool(default_mix(4000), size=64, seed=0, num_proc=2, cache_dir="runs/lvm")
    train, val = split(pool, val_fraction=0.05)                # (N, 64, 64, 3) uint8 each
    x = torch.from_numpy(train[:32]).permute(0, 3, 1, 2) / 255  # (B, 3, H, W) float in [0, 1]
    x = augment(x, torch.Generator().manual_seed(0))           # flips, 90-degree turns, crops

The pool mixes simulated optical stamps (optical-morphology, -gmnist, -lsbg), simulated radio fields
and cutouts (radio-b1 ... radio-b6) and the real FIRST radio galaxies of the firstgalaxydata package
(`radio-first`: its train and valid splits only; the literature test split stays unseen). Every image
is what the models see, `render_rgb` of the record; optical stamps and FIRST cutouts are then cropped
to their main source (seed 000's effective-area crop, `adaptive_crop` on the rendered picture, as the
paper crops on grey levels), wide radio fields are only resized. Record i of family f is drawn from
`default_rng([seed, PRETRAIN_STREAM, crc32(f), i])`: the pool does not depend on `num_proc`, and it
never repeats the images that `astrovlm data build` draws from `default_rng([seed, i])`.

The pool is shuffled once (so the last rows, the held-out split, are a fair sample of the mix) and
cached as `pool-<hash>.npy` with `pool-<hash>.json` beside it (mix, size, seed and the id and family
of every row); the hash covers everything that changes the pixels, so a rerun loads the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from data_builders.crop import adaptive_crop
from data_builders.families import get_family
from data_builders.stretch import render_rgb

FIRST = "radio-first"  # the real FIRST images (imported, not simulated)
FIRST_SPLITS = ("train", "valid")  # the literature test split is never pretrained on
FIRST_AVAILABLE = 1958  # images in those two splits of firstgalaxydata
SIMULATED = (
    "optical-morphology",
    "optical-gmnist",
    "optical-lsbg",
    "radio-b1",
    "radio-b2",
    "radio-b3",
    "radio-b4",
    "radio-b5",
    "radio-b6",
)
SOURCES = (*SIMULATED, FIRST)
ADAPTIVE_CROP = frozenset({"optical-morphology", "optical-gmnist", "optical-lsbg", FIRST})  # stamps
DEFAULT_WEIGHTS = {  # share of each source in the default pool: 55 % optical, 45 % radio
    "optical-morphology": 0.30,
    "optical-gmnist": 0.15,
    "optical-lsbg": 0.10,
    **{f"radio-b{i}": 0.05 for i in range(1, 7)},
    FIRST: 0.15,
}
PRETRAIN_STREAM = 7_000  # keeps the pool's random streams apart from the data builders' [seed, i]
POOL_VERSION = 1  # bump when the rendering recipe changes, so old caches are not reused
CHUNK = 64  # images per worker task


# ----------------------------------------------------------------------------- the mix


def check_mix(mix: dict[str, int]) -> dict[str, int]:
    """The mix with its counts checked: known sources, positive ints, FIRST within what exists."""
    if not isinstance(mix, dict) or not mix:
        raise ValueError(f"mix must be a non-empty dict of source -> count, got {mix!r}")
    unknown = sorted(set(mix) - set(SOURCES))
    if unknown:
        raise ValueError(f"unknown pool sources {unknown}; valid: {list(SOURCES)}")
    for name, count in mix.items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"mix[{name!r}] must be a positive int, got {count!r}")
    if mix.get(FIRST, 0) > FIRST_AVAILABLE:
        raise ValueError(
            f"mix asks for {mix[FIRST]} {FIRST} images; its {'+'.join(FIRST_SPLITS)} splits hold "
            f"{FIRST_AVAILABLE}"
        )
    return {name: mix[name] for name in SOURCES if name in mix}  # canonical order


def scale_mix(weights: dict[str, float], n: int) -> dict[str, int]:
    """Split `n` images over the sources in proportion to `weights` (largest remainders), with FIRST
    capped at the images that exist and the excess spread over the simulated sources."""
    if n < 1:
        raise ValueError(f"pool size must be >= 1, got {n}")
    weights = {k: float(v) for k, v in weights.items() if v > 0}
    total = sum(weights.values())
    if not weights or total <= 0:
        raise ValueError(f"mix weights must hold a positive entry, got {weights}")
    counts = _largest_remainder({k: n * w / total for k, w in weights.items()})
    if counts.get(FIRST, 0) > FIRST_AVAILABLE:
        rest = {k: w for k, w in weights.items() if k != FIRST}
        if not rest:
            raise ValueError(f"a pool of {n} {FIRST} images is larger than the {FIRST_AVAILABLE} there are")
        spread = _largest_remainder(
            {k: (n - FIRST_AVAILABLE) * w / sum(rest.values()) for k, w in rest.items()}
        )
        counts = {**spread, FIRST: FIRST_AVAILABLE}
    return check_mix({k: c for k, c in counts.items() if c > 0})


def default_mix(n: int) -> dict[str, int]:
    """The default pool of `n` images (DEFAULT_WEIGHTS)."""
    return scale_mix(DEFAULT_WEIGHTS, n)


def _largest_remainder(shares: dict[str, float]) -> dict[str, int]:
    counts = {k: math.floor(v) for k, v in shares.items()}
    left = round(sum(shares.values())) - sum(counts.values())
    for k in sorted(shares, key=lambda k: counts[k] - shares[k])[:left]:
        counts[k] += 1
    return counts


# ----------------------------------------------------------------------------- one image


def prepare_image(
    image: np.ndarray, domain: str, bands: tuple[str, ...], size: int, crop: bool
) -> np.ndarray:
    """A record's (C, H, W) image -> (size, size, 3) uint8: rendered, cropped to the main source when
    `crop`, resized with anti-aliasing."""
    rgb = render_rgb(image, domain, bands)  # (H, W, 3) uint8
    if crop:
        chw = adaptive_crop(np.moveaxis(rgb, -1, 0).astype(np.float32), size)  # (3, size, size)
        return np.moveaxis(np.clip(np.round(chw), 0, 255).astype(np.uint8), 0, -1)
    if rgb.shape[:2] != (size, size):
        rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR))  # antialiased
    return rgb


def stream_seed(seed: int, name: str, i: int) -> list[int]:
    return [seed, PRETRAIN_STREAM, zlib.crc32(name.encode()), i]


@np.errstate(divide="ignore", invalid="ignore")  # astropy's Lupton mapping divides 0 by 0 on empty pixels
def render_chunk(
    task: tuple[str, tuple[int, ...], int, int, int, str],
) -> tuple[np.ndarray, list[str], list[str]]:
    """Worker: records start..stop of simulated family `name`, record i drawn from
    `default_rng([*stream, i])` and named `id_prefix + str(i)`, rendered as the pool renders them ->
    (n, size, size, 3) uint8, their ids and their first labels. The pool, the multi-task data and the
    few-shot data all draw through it, each from its own stream."""
    name, stream, start, stop, size, id_prefix = task
    family = get_family(name)
    sim_size = max(size, family.default_size)
    images, ids, labels = [], [], []
    for i in range(start, stop):
        record = family.simulate(np.random.default_rng([*stream, i]), sim_size, f"{id_prefix}{i}")
        images.append(prepare_image(record.image, record.domain, record.bands, size, name in ADAPTIVE_CROP))
        ids.append(record.id)
        labels.append(record.labels[0])
    return np.stack(images), ids, labels


def _simulate_chunk(task: tuple[str, int, int, int, int]) -> tuple[np.ndarray, list[str]]:
    """Worker: records start..stop of a simulated family in the pool's stream -> images and ids."""
    name, seed, start, stop, size = task
    images, ids, _ = render_chunk(
        (name, tuple(stream_seed(seed, name, 0)[:-1]), start, stop, size, f"{name}-{seed}-")
    )
    return images, ids


def _render_first_chunk(task: tuple[np.ndarray, list[str], int]) -> tuple[np.ndarray, list[str]]:
    """Worker: FIRST images, (n, 300, 300) uint8 -> (n, size, size, 3) uint8."""
    planes, ids, size = task
    crop = FIRST in ADAPTIVE_CROP
    images = [prepare_image(p[None].astype(np.float32), "radio", ("I",), size, crop) for p in planes]
    return np.stack(images), ids


def _first_tasks(count: int, seed: int, size: int) -> list[tuple]:
    """`count` FIRST images of the train/valid splits, picked by `seed`, in chunks for the workers."""
    from data_builders.importers import read_first

    rng = np.random.default_rng(stream_seed(seed, FIRST, 0))
    chosen = set(rng.choice(FIRST_AVAILABLE, size=count, replace=False).tolist())
    planes, ids, seen = [], [], 0
    for i, record in enumerate(read_first(family=FIRST, splits=FIRST_SPLITS)):
        seen += 1
        if i in chosen:  # kept as uint8 (the data are 8-bit): 90 kB an image, not 360 kB
            planes.append(np.clip(np.round(record.image[0]), 0, 255).astype(np.uint8))
            ids.append(record.id)
    if seen != FIRST_AVAILABLE:
        raise ValueError(
            f"the installed firstgalaxydata holds {seen} images in its {FIRST_SPLITS} splits, "
            f"expected {FIRST_AVAILABLE}; pin the package version the pool was designed for"
        )
    return [(np.stack(planes[s : s + CHUNK]), ids[s : s + CHUNK], size) for s in range(0, count, CHUNK)]


# ----------------------------------------------------------------------------- the pool


def pool_key(mix: dict[str, int], size: int, seed: int) -> str:
    """Hash of everything that changes the pool's pixels (not num_proc)."""
    spec = {"mix": check_mix(mix), "size": size, "seed": seed, "version": POOL_VERSION}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def pool_path(cache_dir: str | Path, mix: dict[str, int], size: int, seed: int) -> Path:
    return Path(cache_dir) / f"pool-{pool_key(mix, size, seed)}.npy"


def build_pool(
    mix: dict[str, int],
    size: int,
    seed: int,
    num_proc: int = 1,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> np.ndarray:
    """(N, size, size, 3) uint8 images, N = sum(mix.values()), shuffled by `seed`.

    With `cache_dir` the pool is loaded from `pool-<hash>.npy` there when it exists, and otherwise
    drawn and written there (atomically, with the `.json` index of row ids and families beside it).
    """
    mix = check_mix(mix)
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    if not isinstance(num_proc, int) or num_proc < 1:
        raise ValueError(f"num_proc must be a positive int, got {num_proc!r}")
    path = pool_path(cache_dir, mix, size, seed) if cache_dir is not None else None
    if path is not None and path.is_file():
        pool = np.load(path, mmap_mode="r")  # read-only, and shared by the processes of a launch
        if pool.shape != (sum(mix.values()), size, size, 3) or pool.dtype != np.uint8:
            raise ValueError(f"cached pool {path} has shape {pool.shape} {pool.dtype}; delete it to rebuild")
        return pool

    tasks = [
        (name, seed, start, min(start + CHUNK, count), size)
        for name, count in mix.items()
        if name != FIRST
        for start in range(0, count, CHUNK)
    ]
    first = _first_tasks(mix[FIRST], seed, size) if FIRST in mix else []
    jobs = [(_simulate_chunk, t) for t in tasks] + [(_render_first_chunk, t) for t in first]
    names = [t[0] for t in tasks] + [FIRST] * len(first)
    images, ids, families = [], [], []
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(
            tqdm(total=sum(mix.values()), desc=f"pool {size}px", unit="img", disable=not progress)
        )
        if num_proc == 1:
            results = map(_call, jobs)
        else:  # executor.map keeps the order: the pool does not depend on num_proc
            results = stack.enter_context(ProcessPoolExecutor(num_proc)).map(_call, jobs)
        for name, (chunk, chunk_ids) in zip(names, results, strict=True):
            images.append(chunk)
            ids += chunk_ids
            families += [name] * len(chunk)
            bar.update(len(chunk))

    order = np.random.default_rng([seed, PRETRAIN_STREAM]).permutation(len(ids))
    pool = np.concatenate(images)[order]
    if path is not None:
        index = {
            "mix": mix,
            "size": size,
            "seed": seed,
            "version": POOL_VERSION,
            "ids": [ids[i] for i in order],
            "families": [families[i] for i in order],
        }
        _write_atomic(path, pool, index)
    return pool


def _call(job):
    fn, task = job
    return fn(task)


def _write_atomic(path: Path, pool: np.ndarray, index: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, pool)
    json_tmp = tmp.with_suffix(".json.tmp")
    json_tmp.write_text(json.dumps(index))
    os.replace(json_tmp, path.with_suffix(".json"))
    os.replace(tmp, path)  # the .npy last: its presence means the pool is complete


def split(pool: np.ndarray, val_fraction: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(train, val): the last ceil(val_fraction * N) rows of the (already shuffled) pool are held out."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_val = math.ceil(len(pool) * val_fraction)
    if n_val >= len(pool):
        raise ValueError(
            f"a pool of {len(pool)} images leaves nothing to train on at val_fraction {val_fraction}"
        )
    return pool[: len(pool) - n_val], pool[len(pool) - n_val :]


# ----------------------------------------------------------------------------- augmentation


def square_symmetries(images: np.ndarray) -> list[np.ndarray]:
    """The eight symmetries of the square of (..., H, W, C) images: quarter turns 0-3, each as it is and
    mirrored left-right (so every second one, from the first, is a plain turn); the first is the images
    as they are."""
    return [square_symmetry(images, view) for view in range(8)]


def square_symmetry(images: np.ndarray, view: int) -> np.ndarray:
    """View `view` (0-7) of `square_symmetries`: quarter turns view // 2, mirrored when view is odd."""
    if view not in range(8):
        raise ValueError(f"view must be one of 0-7 (the symmetries of the square), got {view!r}")
    turned = np.rot90(images, view // 2, axes=(-3, -2))
    return turned[..., ::-1, :] if view % 2 else turned


def augment(images: torch.Tensor, generator: torch.Generator, min_area: float = 0.8) -> torch.Tensor:
    """Per image: one of the 8 symmetries of the square (flip, then 0-3 quarter turns) and a random
    square crop of `min_area`..100 % of the area resized back; (B, C, H, H) -> (B, C, H, H).

    The random draws come from `generator` (a CPU generator), so the result is a function of the
    images and the generator's state. Flips and turns are exact pixel moves; the crops of the whole
    batch are one bilinear affine resampling (a zoom of at most 1/sqrt(min_area): no aliasing).
    """
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"expected square images (B, C, H, H), got {tuple(images.shape)}")
    if not 0.0 < min_area <= 1.0:
        raise ValueError(f"min_area must be in (0, 1], got {min_area}")
    B = images.shape[0]
    turns = torch.randint(0, 4, (B,), generator=generator)
    flips = torch.rand(B, generator=generator) < 0.5
    side = torch.sqrt(min_area + (1 - min_area) * torch.rand(B, generator=generator))  # crop side / H
    centre = (1 - side)[:, None] * (2 * torch.rand(B, 2, generator=generator) - 1)  # in [-1, 1] coords

    out = torch.empty_like(images)
    for k in range(4):
        for flip in (False, True):
            chosen = ((turns == k) & (flips == flip)).nonzero().squeeze(1).to(images.device)
            if len(chosen):
                x = images[chosen]
                out[chosen] = torch.rot90(x.flip(-1) if flip else x, k, dims=(-2, -1))
    if min_area == 1.0:
        return out
    theta = torch.zeros(B, 2, 3)  # output -> input coordinates: scale by the side, move to the centre
    theta[:, 0, 0] = theta[:, 1, 1] = side
    theta[:, :, 2] = centre
    grid = F.affine_grid(theta.to(images.device, images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(out, grid, mode="bilinear", padding_mode="border", align_corners=False)
