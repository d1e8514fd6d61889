"""Tables of benchmark runs: one column per run folder (as `astrovlm bench run` writes them)."""

from __future__ import annotations

import json
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
