"""Export a built set to LLaVA's training JSON.

    astrovlm data export-llava OUT LLAVA_DIR

Writes LLAVA_DIR/images/<id>.png once per image and LLAVA_DIR/llava.json, a list of
{"id", "image", "conversations": [{"from": "human"|"gpt"|"tool", "value"}]} with one entry per dialogue,
the first human turn starting with "<image>\\n" (LLaVA's convention). Tool turns keep `"from": "tool"`;
trainers that know only human/gpt can drop those dialogues (their template starts with "tool:").
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from tqdm import tqdm


def export_llava(built: str | Path, out: str | Path, progress: bool = True) -> Path:
    built, out = Path(built), Path(out)
    shards = sorted(built.glob("shard-*.parquet"))
    if not shards:
        raise FileNotFoundError(f"no shards in {built}; build it with `astrovlm data build`")
    (out / "images").mkdir(parents=True, exist_ok=True)
    entries = []
    for shard in tqdm(shards, desc="export", unit="shard", disable=not progress):
        table = pq.read_table(shard, columns=["id", "image", "conversations", "templates"])
        for row in table.to_pylist():  # raw Arrow rows: the PNG bytes are written as they are
            image_path = Path("images") / f"{row['id']}.png"
            (out / image_path).write_bytes(row["image"]["bytes"])
            for j, turns in enumerate(row["conversations"]):
                entries.append(
                    {
                        "id": f"{row['id']}-{j}",
                        "image": str(image_path),
                        "conversations": turns,
                        "template": row["templates"][j],
                    }
                )
    target = out / "llava.json"
    target.write_text(json.dumps(entries, indent=1))
    return target
