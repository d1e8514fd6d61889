"""Pictures for people: preview PNGs of one image and contact sheets of a family.

astrovlm data preview --family radio-b6 --out sheet.png     # or --family all --out DIR
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from data_builders.families import get_family, list_families  # noqa: E402
from data_builders.records import Record  # noqa: E402
from data_builders.stretch import render_rgb  # noqa: E402


def contact_sheet(
    records: list[Record], out: str | Path, title: str = "", columns: int = 6, boxes: bool = False
) -> Path:
    """A grid of rendered records with their labels; `boxes` draws each source's box."""
    if not records:
        raise ValueError("no records to show")
    rows = -(-len(records) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.45 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, record in zip(axes.ravel(), records):
        ax.imshow(render_rgb(record.image, record.domain, record.bands), interpolation="nearest")
        ax.set_title(", ".join(record.labels) or "-", fontsize=8)
        if boxes:
            for b in record.boxes:
                ax.add_patch(
                    Rectangle(
                        (b.x0 - 0.5, b.y0 - 0.5), b.x1 - b.x0, b.y1 - b.y0, fill=False, lw=0.6, ec="cyan"
                    )
                )
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, facecolor="white")
    plt.close(fig)
    return out


def family_sheet(
    name: str, out: str | Path, n: int = 24, seed: int = 0, size: int | None = None, boxes: bool = False
) -> Path:
    """Draw `n` records of a simulated family (sorted by label so classes sit together) into a sheet."""
    family = get_family(name)
    if family.simulate is None:
        raise ValueError(f"family {name!r} has no simulator")
    size = size or family.default_size
    records = [family.simulate(np.random.default_rng([seed, i]), size, f"{name}-{i}") for i in range(n)]
    records.sort(key=lambda r: r.labels)
    title = f"{name} (simulated, {size}x{size} px): {family.description}"
    return contact_sheet(records, out, title=title, columns=min(6, n), boxes=boxes)


def preview_all(out_dir: str | Path, n: int = 24, seed: int = 0) -> list[Path]:
    out_dir = Path(out_dir)
    return [
        family_sheet(name, out_dir / f"{name}.png", n=n, seed=seed, boxes=name.endswith("field"))
        for name in list_families()
        if get_family(name).simulate is not None
    ]
