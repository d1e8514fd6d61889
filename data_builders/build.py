"""Build a Q&A dataset on disk: records (simulated or imported) -> rendered images + dialogues -> Parquet.

    astrovlm data build --family radio-b1 --n 500 --out OUT [--num-proc 2] [--seed 0]
    astrovlm data build --import mirabest --path MiraBest/ --out OUT

Output, readable as is by Hugging Face `datasets` (`load_dataset("parquet", data_files="OUT/*.parquet")`),
Spark, Dask or Ray:
    OUT/shard-00000.parquet ...   one row per image: PNG bytes, labels, normalised boxes, dialogues
    OUT/shard-00000.json ...      that shard's counts (written last: a shard without it is redone)
    OUT/build_config.json         what was asked; a resumed build must ask the same
    OUT/manifest.json             counts per class, per template and kind, skipped records with reasons

Record i of a simulated family is drawn from `default_rng([seed, i])`, so the data do not depend on the
shard size or the number of processes. A shard is written to a temporary name and renamed when complete,
so an interrupted build keeps its finished shards and never leaves a half-written one; rerunning the same
command resumes.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from data_builders.conversations import KINDS, build_dialogues
from data_builders.families import Family, get_family
from data_builders.records import Record
from data_builders.stretch import render_rgb

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildConfig:
    out: str
    family: str | None = None  # simulate records of this family ...
    n: int = 1000
    importer: str | None = None  # ... or import them with this importer from `path`
    path: str | None = None
    seed: int = 0
    size: int | None = None  # image side in px for simulated families (None: the family's default)
    shard_size: int = 1000
    num_proc: int = 1
    dialogues_per_image: int = 4
    kinds: tuple[str, ...] = KINDS
    import_options: dict = field(default_factory=dict)

    def __post_init__(self):
        if (self.family is None) == (self.importer is None):
            raise ValueError("give exactly one of family (simulate) or importer (import real data)")
        if self.importer is not None and not self.path and not _has_bundled_data(self.importer):
            raise ValueError(f"importer {self.importer!r} needs a path")
        if self.n < 1 or self.shard_size < 1 or self.num_proc < 1 or self.dialogues_per_image < 1:
            raise ValueError(f"n, shard_size, num_proc and dialogues_per_image must be >= 1: {self}")
        if self.family is not None and get_family(self.family).simulate is None:
            raise ValueError(
                f"family {self.family!r} is real data with no simulator; import it instead, e.g. "
                "astrovlm data build --import first --option family=radio-first --out OUT"
            )
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown conversation kinds {sorted(unknown)}; valid: {KINDS}")


def _has_bundled_data(importer: str) -> bool:
    """An importer whose `path` may be None reads data its package ships (firstgalaxydata)."""
    import inspect

    from data_builders.importers import IMPORTERS

    parameter = (
        inspect.signature(IMPORTERS[importer]).parameters.get("path") if importer in IMPORTERS else None
    )
    return parameter is not None and parameter.default is None


def features():
    from datasets import Features, Image, List, Value

    box = {
        "label": Value("string"),
        "x0": Value("float32"),
        "y0": Value("float32"),
        "x1": Value("float32"),
        "y1": Value("float32"),
    }
    return Features(
        {
            "id": Value("string"),
            "image": Image(),
            "family": Value("string"),
            "domain": Value("string"),
            "labels": List(Value("string")),
            "boxes": List(box),  # normalised to [0, 1], origin top-left
            "params": Value("string"),  # JSON of the physical parameters
            "conversations": List(List({"from": Value("string"), "value": Value("string")})),
            "templates": List(Value("string")),
            "origin": Value("string"),
            "width": Value("int32"),
            "height": Value("int32"),
        }
    )


def png_bytes(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def record_to_row(record: Record, family: Family, config: BuildConfig) -> dict:
    rgb = render_rgb(record.image, record.domain, record.bands)
    dialogues = build_dialogues(record, family, config.seed, config.dialogues_per_image, config.kinds)
    w, h = record.width, record.height
    return {
        "id": record.id,
        "image": {"bytes": png_bytes(rgb), "path": None},
        "family": record.family,
        "domain": record.domain,
        "labels": list(record.labels),
        "boxes": [
            dict(zip(("x0", "y0", "x1", "y1"), b.normalised(w, h)), label=b.label) for b in record.boxes
        ],
        "params": json.dumps(record.params, default=float),
        "conversations": [d.turns for d in dialogues],
        "templates": [d.template for d in dialogues],
        "origin": record.origin,
        "width": w,
        "height": h,
    }


def simulated_records(config: BuildConfig, start: int, stop: int) -> Iterator[Record]:
    family = get_family(config.family)
    size = config.size or family.default_size
    for i in range(start, stop):
        yield family.simulate(
            np.random.default_rng([config.seed, i]), size, f"{family.name}-{config.seed}-{i:07d}"
        )


def write_shard(
    config: BuildConfig, index: int, records: Iterable[Record], skipped: Counter | None = None
) -> dict:
    """Render, converse and write one shard atomically; return its counts."""
    from datasets import Dataset

    out = Path(config.out)
    rows, skipped = [], Counter(skipped or {})
    labels, templates, kinds = Counter(), Counter(), Counter()
    families: dict[str, Family] = {}
    for record in records:
        try:
            family = families.get(record.family) or families.setdefault(
                record.family, family_for(record, config)
            )
            row = record_to_row(record, family, config)
        except ValueError as exc:  # a record that cannot be rendered or conversed: counted, not fatal
            skipped[f"{record.id}: {exc}"] += 1
            continue
        rows.append(row)
        labels.update(row["labels"])
        for template in row["templates"]:
            templates[template] += 1
            kinds.update(part.split("/")[0].split(":")[0] for part in template.split("+"))
    stats = {
        "shard": index,
        "records": len(rows),
        "dialogues": sum(len(r["conversations"]) for r in rows),
        "labels": dict(labels),
        "templates": dict(templates),
        "kinds": dict(kinds),
        "skipped": dict(skipped),
    }
    name = f"shard-{index:05d}"
    tmp = out / f".{name}.parquet.tmp"
    Dataset.from_list(rows, features=features()).to_parquet(str(tmp))
    os.replace(tmp, out / f"{name}.parquet")
    (out / f".{name}.json.tmp").write_text(json.dumps(stats))
    os.replace(out / f".{name}.json.tmp", out / f"{name}.json")
    return stats


def family_for(record: Record, config: BuildConfig) -> Family:
    """The registered family, or for a user's own labels one described by the import options."""
    try:
        return get_family(record.family)
    except ValueError:
        classes = tuple(config.import_options.get("classes") or record.labels)
        label_type = config.import_options.get("label_type", "multi")
        return Family(record.family, record.domain, classes, label_type, "imported labels", None)


def _simulated_shard(args: tuple[BuildConfig, int]) -> dict:
    config, index = args
    start = index * config.shard_size
    return write_shard(
        config, index, simulated_records(config, start, min(start + config.shard_size, config.n))
    )


def shard_done(out: Path, index: int) -> bool:
    return (out / f"shard-{index:05d}.parquet").exists() and (out / f"shard-{index:05d}.json").exists()


def build(config: BuildConfig, progress: bool = True) -> dict:
    """Run (or resume) a build; returns the manifest it writes."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    _check_resume(out, config)
    started = time.perf_counter()
    if config.family is not None:
        _build_simulated(config, out, progress)
    else:
        _build_imported(config, out, progress)
    return write_manifest(config, out, time.perf_counter() - started)


def _build_simulated(config: BuildConfig, out: Path, progress: bool) -> None:
    n_shards = -(-config.n // config.shard_size)
    todo = [i for i in range(n_shards) if not shard_done(out, i)]
    bar = tqdm(
        total=config.n,
        initial=config.n - sum(_shard_len(config, i) for i in todo),
        desc=f"build {config.family}",
        unit="img",
        disable=not progress,
    )
    if config.num_proc == 1:
        for i in todo:
            bar.update(_simulated_shard((config, i))["records"])
    else:
        with ProcessPoolExecutor(config.num_proc) as pool:
            for stats in pool.map(_simulated_shard, [(config, i) for i in todo]):
                bar.update(stats["records"])
    bar.close()


def _shard_len(config: BuildConfig, index: int) -> int:
    return min(config.shard_size, config.n - index * config.shard_size)


def _build_imported(config: BuildConfig, out: Path, progress: bool) -> None:
    """Stream the importer's records into shards of `shard_size`; each record the importer skipped is
    listed, with its reason, in the shard being filled when it was skipped."""
    from data_builders.importers import ImportStats, import_records

    stats = ImportStats()
    stream = import_records(config.importer, config.path, stats=stats, **config.import_options)
    bar = tqdm(desc=f"import {config.importer}", unit="img", disable=not progress)
    chunk: list[Record] = []
    index = listed = 0

    def flush() -> None:
        nonlocal index, chunk, listed
        skipped = Counter(f"{where}: {reason}" for where, reason in stats.skipped[listed:])
        listed = len(stats.skipped)
        if not shard_done(out, index):
            write_shard(config, index, chunk, skipped)
        bar.update(len(chunk))
        index, chunk = index + 1, []

    taken = 0
    for record in stream:
        chunk.append(record)
        taken += 1
        if len(chunk) == config.shard_size or taken == config.n:
            flush()
        if taken == config.n:
            break
    if chunk or index == 0:
        flush()
    bar.close()


def _check_resume(out: Path, config: BuildConfig) -> None:
    saved = out / "build_config.json"
    asked = json.loads(json.dumps(asdict(config)))
    asked.pop("num_proc")  # how many processes build it does not change the data
    if saved.exists():
        before = json.loads(saved.read_text())
        before.pop("num_proc", None)
        if before != asked:
            changed = sorted(k for k in asked if before.get(k) != asked[k])
            raise ValueError(
                f"{out} holds a build with other settings ({', '.join(changed)}); use another --out"
            )
    else:
        saved.write_text(json.dumps(asked, indent=2))


def write_manifest(config: BuildConfig, out: Path, seconds: float) -> dict:
    shards = sorted(out.glob("shard-*.json"))
    totals = {
        "records": 0,
        "dialogues": 0,
        "labels": Counter(),
        "templates": Counter(),
        "kinds": Counter(),
        "skipped": Counter(),
    }
    for path in shards:
        stats = json.loads(path.read_text())
        totals["records"] += stats["records"]
        totals["dialogues"] += stats["dialogues"]
        for key in ("labels", "templates", "kinds", "skipped"):
            totals[key].update(stats[key])
    manifest = {
        "config": json.loads(json.dumps(asdict(config))),
        "shards": [p.with_suffix(".parquet").name for p in shards],
        "records": totals["records"],
        "dialogues": totals["dialogues"],
        "per_class": dict(sorted(totals["labels"].items())),
        "per_template": dict(sorted(totals["templates"].items())),
        "per_kind": dict(sorted(totals["kinds"].items())),
        "skipped": sum(totals["skipped"].values()),
        "skipped_reasons": dict(totals["skipped"]),
        "seconds": round(seconds, 2),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def load_built(out: str | Path):
    """The built set as a Hugging Face `Dataset` (images decode to PIL on access)."""
    from datasets import Dataset

    files = sorted(str(p) for p in Path(out).glob("shard-*.parquet"))
    if not files:
        raise FileNotFoundError(f"no shards in {out}; build it with `astrovlm data build`")
    return Dataset.from_parquet(files, features=features())
