"""Reports of benchmark runs: one run's report (Markdown, HTML, plots) and the table of several runs."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

from benchmarks.runner import METRICS
from benchmarks.tasks import list_tasks


def quality_table(runs: list[Path]) -> str:
    """Markdown: macro-F1 per task and run with its 95 % bootstrap interval (accuracy beside it for
    single-label tasks; exact match for multi-label ones); a dash where a run lacks the task."""
    header = "| task | " + " | ".join(run.name for run in runs) + " |"
    lines = [header, "|" + " --- |" * (len(runs) + 1)]
    for task_id in list_tasks():
        cells = []
        for run in runs:
            path = run / task_id / METRICS
            if not path.is_file():
                cells.append("–")
                continue
            m = json.loads(path.read_text())
            second = m.get("accuracy", m.get("exact_match"))
            label = "acc" if "accuracy" in m else "exact"
            ci = m.get("macro_f1_ci")
            interval = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
            cells.append(f"{m['macro_f1']:.3f}{interval} ({label} {second:.3f}, n {m['n']})")
        if any(c != "–" for c in cells):
            lines.append(f"| {task_id} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare_runs(runs: list[Path], out: Path | None = None) -> str:
    """The quality table of `runs`; with `out`, also written there (.md) with a bar chart of macro-F1 and
    its 95 % interval per task and run beside it (.png)."""
    table = quality_table(runs)
    if out is None:
        return table
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = out.with_suffix(".md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table + "\n")
    tasks = [t for t in list_tasks() if any((run / t / METRICS).is_file() for run in runs)]
    fig, ax = plt.subplots(figsize=(1.5 + 1.1 * len(tasks), 3.4), dpi=110)
    width = 0.8 / max(len(runs), 1)
    for k, run in enumerate(runs):
        for i, task_id in enumerate(tasks):
            path = run / task_id / METRICS
            if not path.is_file():
                continue
            m = json.loads(path.read_text())
            low, high = m.get("macro_f1_ci", (m["macro_f1"], m["macro_f1"]))
            x = i + (k - (len(runs) - 1) / 2) * width
            ax.bar(x, m["macro_f1"], width, color=f"C{k}", label=run.name if i == 0 else None)
            ax.errorbar(x, m["macro_f1"], [[m["macro_f1"] - low], [high - m["macro_f1"]]], color="k", lw=0.8)
    ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("macro-F1 (95 % CI)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"))
    plt.close(fig)
    return table


# ----------------------------------------------------------------------------- one run's report


def write_run_report(out: Path, metrics: dict) -> list[Path]:
    """report.md and report.html beside metrics.json: the scores with their interval, per-class precision,
    recall and F1 as a table and as bars (per_class.png), and the confusion matrix (confusion.png; not for
    multi-label tasks, which have none)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    classes = list(metrics["per_class"])
    written = []
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(classes), 3.2), dpi=110)
    width = 0.27
    for k, name in enumerate(("precision", "recall", "f1")):
        xs = [i + (k - 1) * width for i in range(len(classes))]
        ax.bar(xs, [metrics["per_class"][c][name] for c in classes], width, label=name)
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncols=3)
    ax.set_title(f"{metrics['task']}: per class", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "per_class.png")
    plt.close(fig)
    written.append(out / "per_class.png")
    if "confusion" in metrics:
        matrix = metrics["confusion"]
        fig, ax = plt.subplots(figsize=(1.5 + 0.6 * len(classes), 1.2 + 0.6 * len(classes)), dpi=110)
        ax.imshow(matrix, cmap="Blues")
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                ax.text(j, i, count, ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(classes)), classes, fontsize=8)
        ax.set_xlabel("prediction")
        ax.set_ylabel("truth")
        fig.tight_layout()
        fig.savefig(out / "confusion.png")
        plt.close(fig)
        written.append(out / "confusion.png")

    low, high = metrics.get("macro_f1_ci", (float("nan"), float("nan")))
    summary = [
        ("backend", metrics["backend"]),
        ("images", metrics["n"]),
        ("macro-F1", f"{metrics['macro_f1']:.3f} (95 % CI {low:.3f}–{high:.3f})"),
        ("accuracy" if "accuracy" in metrics else "exact match", f"{metrics.get('accuracy', metrics.get('exact_match')):.3f}"),
        ("unparsed answers", f"{metrics['parse_failure_rate']:.1%} (counted wrong)"),
    ]  # fmt: skip
    if metrics.get("option_order_flip_rate") is not None:
        summary.append(("answers changed by reordering the options",
                        f"{metrics['option_order_flip_rate']:.1%} of {metrics['option_order_checked']}"))  # fmt: skip
    rows = [(c, *(f"{metrics['per_class'][c][k]:.3f}" for k in ("precision", "recall", "f1")),
             metrics["per_class"][c]["support"]) for c in classes]  # fmt: skip
    md = [f"# {metrics['task']}", ""] + [f"- **{k}**: {v}" for k, v in summary]
    md += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    md += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    md += ["", "![per class](per_class.png)"] + (
        ["", "![confusion](confusion.png)"] if "confusion" in metrics else []
    )
    (out / "report.md").write_text("\n".join(md) + "\n")
    html = [f"<!doctype html><meta charset=utf-8><title>{escape(metrics['task'])}</title>",
            f"<h1>{escape(metrics['task'])}</h1><ul>"]  # fmt: skip
    html += [f"<li><b>{escape(str(k))}</b>: {escape(str(v))}</li>" for k, v in summary] + [
        "</ul><table border=1>"
    ]
    html += ["<tr><th>class<th>precision<th>recall<th>F1<th>support</tr>"]
    html += ["<tr>" + "".join(f"<td>{escape(str(v))}" for v in row) + "</tr>" for row in rows]
    html += ["</table>", '<p><img src="per_class.png" alt="per class">']
    html += ['<p><img src="confusion.png" alt="confusion matrix">'] if "confusion" in metrics else []
    (out / "report.html").write_text("\n".join(html) + "\n")
    return [out / "report.md", out / "report.html", *written]
