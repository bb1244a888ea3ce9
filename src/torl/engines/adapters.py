"""A LoRA checkpoint as a loadable model: its base model with the adapter merged in (PEFT).

A LoRA run's checkpoints hold only the adapter (`adapter_config.json`, `adapter_model.safetensors`),
which no engine loads by itself. `merged_checkpoint` merges it into the base model named in
`adapter_config.json` once and keeps the result in torl's cache (`models/merged-<hash>`, keyed by
the adapter's and the base's identity), so every engine and tokenizer loads it like any other
checkpoint directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path


def merged_checkpoint(adapter_dir: str | Path) -> Path:
    """The cached merged model for a LoRA adapter directory (merged on first use)."""
    from torl.engines.models import ModelNotFound, _file_lock, cache_dir, resolve_model

    adapter_dir = Path(adapter_dir)
    try:
        base = json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    except (OSError, ValueError, KeyError):
        raise ModelNotFound(f"{adapter_dir}/adapter_config.json names no base model (base_model_name_or_path)") from None
    base_path = resolve_model(base)
    key = hashlib.sha256(base_path.encode())
    for weights in sorted(adapter_dir.glob("adapter_model.*")):
        key.update(weights.name.encode() + weights.read_bytes())
    target = cache_dir() / "models" / f"merged-{key.hexdigest()[:16]}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f".{target.name}.lock"):
        if (target / "config.json").exists():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            _merge(base_path, adapter_dir, tmp)
            os.rename(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _merge(base_path: str, adapter_dir: Path, out: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_path, dtype="auto")  # the base's own precision
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(out))
    tokenizer_source = adapter_dir if (adapter_dir / "tokenizer_config.json").exists() else base_path
    AutoTokenizer.from_pretrained(str(tokenizer_source)).save_pretrained(str(out))
