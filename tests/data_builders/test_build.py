"""Dataset builds: Parquet shards readable by `datasets`, manifest, resume, parallel = serial, export."""

import io
import json
import subprocess
import sys

import pytest
from PIL import Image

from data_builders.build import BuildConfig, build, load_built
from data_builders.export import export_llava


def small(out, **kw):
    options = {"family": "radio-b6", "n": 10, "shard_size": 4, "dialogues_per_image": 3, "size": 64}
    return BuildConfig(out=str(out), **{**options, **kw})


def test_build_writes_shards_manifest_and_a_loadable_dataset(tmp_path):
    manifest = build(small(tmp_path), progress=False)
    assert manifest["records"] == 10 and manifest["dialogues"] == 30
    assert manifest["shards"] == ["shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet"]
    assert sum(manifest["per_class"].values()) == 10 and set(manifest["per_class"]) <= {"FR-I", "FR-II"}
    assert sum(manifest["per_template"].values()) == 30
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    dataset = load_built(tmp_path)
    assert len(dataset) == 10
    row = dataset[0]
    assert row["image"].size == (64, 64) and row["image"].mode == "RGB"
    assert row["conversations"][0][0]["value"].startswith("<image>\n")
    assert all(0 <= b["x0"] < b["x1"] <= 1 for b in row["boxes"])


def test_parallel_build_equals_serial_and_shard_size_does_not_matter(tmp_path):
    build(small(tmp_path / "a"), progress=False)
    build(small(tmp_path / "b", num_proc=2), progress=False)
    build(small(tmp_path / "c", shard_size=10), progress=False)
    rows = [load_built(tmp_path / k).to_list() for k in "abc"]
    assert rows[0] == rows[1]
    assert [r["id"] for r in rows[0]] == [r["id"] for r in rows[2]]
    assert [r["conversations"] for r in rows[0]] == [r["conversations"] for r in rows[2]]


def test_resume_keeps_finished_shards_and_never_a_half_written_one(tmp_path):
    config = small(tmp_path)
    build(config, progress=False)
    first = (tmp_path / "shard-00000.parquet").stat().st_mtime_ns
    (tmp_path / "shard-00001.json").unlink()  # as if killed between the shard and its stats
    (tmp_path / ".shard-00002.parquet.tmp").write_bytes(b"half")  # and a half-written temporary
    manifest = build(config, progress=False)
    assert manifest["records"] == 10
    assert (tmp_path / "shard-00000.parquet").stat().st_mtime_ns == first  # not redone
    assert len(load_built(tmp_path)) == 10


def test_resume_with_other_settings_is_refused(tmp_path):
    build(small(tmp_path), progress=False)
    with pytest.raises(ValueError, match="other settings.*seed"):
        build(small(tmp_path, seed=1), progress=False)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"family": None}, "exactly one"),
        ({"n": 0}, ">= 1"),
        ({"family": "radio-b9"}, "valid"),
        ({"kinds": ("poetry",)}, "valid"),
        ({"family": "radio-first"}, "import it instead"),
        ({"family": None, "importer": "mirabest"}, "needs a path"),
    ],
)
def test_bad_configs(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        small(tmp_path, **kw)


def test_bundled_real_data_builds_without_a_path(tmp_path):
    config = BuildConfig(
        out=str(tmp_path / "first"), importer="first", n=6, import_options={"family": "radio-first"}
    )
    manifest = build(config, progress=False)
    assert manifest["records"] == 6 and set(manifest["per_class"]) <= {"FRI", "FRII", "Compact", "Bent"}


def test_llava_export(tmp_path):
    build(small(tmp_path / "built", n=3), progress=False)
    target = export_llava(tmp_path / "built", tmp_path / "llava", progress=False)
    entries = json.loads(target.read_text())
    assert len(entries) == 9
    first = entries[0]
    image = Image.open(io.BytesIO((tmp_path / "llava" / first["image"]).read_bytes()))
    assert image.size == (64, 64)
    assert first["conversations"][0]["from"] == "human" and "<image>" in first["conversations"][0]["value"]


def test_cli_build_preview_and_errors(tmp_path):
    cli = [sys.executable, "-m", "app.cli", "data"]
    done = subprocess.run(
        [
            *cli,
            "build",
            "--family",
            "optical-gmnist",
            "--n",
            "6",
            "--size",
            "64",
            "--out",
            str(tmp_path / "set"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "6 images, 24 dialogues, 0 skipped" in done.stdout
    done = subprocess.run(
        [*cli, "preview", "--family", "radio-b2", "--n", "6", "--out", str(tmp_path / "s.png")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / "s.png").size[0] > 300
    done = subprocess.run(
        [*cli, "build", "--family", "nope", "--out", str(tmp_path / "x")], capture_output=True, text=True
    )
    assert done.returncode == 2 and "unknown family 'nope'" in done.stderr and "Traceback" not in done.stderr
