"""An evaluation's manifest: everything another person needs to re-run it and get the same numbers.

Written into results.json under "manifest": the torl version, the model (what was loaded and a
sha256 over its weight files), the task spec, the decoding and engine settings, each benchmark's
file with its sha256 and the problems used, and the seeds (the base seed and how each sample's
seed derives from it). Nothing in it depends on where the output went or when it ran, so two runs
of the same eval write the same manifest.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
SEED_RULE = "torl.tir.seeds.derive_seed(seed, benchmark, question_id, sample)"


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(model_dir: Path) -> str | None:
    """sha256 over the weight files of a checkpoint directory (names and contents, in name order)."""
    files = sorted(p for p in model_dir.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}:{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def model_entry(cfg) -> dict:
    """What was evaluated: the name given, the directory loaded, its weights' hash (None when not local)."""
    if cfg.engine == "openai":
        return {"name": cfg.model, "served_at": cfg.base_url, "path": None, "weights_sha256": None,
                "note": "served by an OpenAI-compatible server: its weights are not visible to torl"}
    from torl.engines.models import ModelNotFound, resolve_model

    try:
        loaded = resolve_model(cfg.model)
    except ModelNotFound:
        loaded = cfg.model
    path = Path(loaded)
    entry = {"name": cfg.model, "path": str(path) if path.is_dir() else None, "weights_sha256": None}
    if path.is_dir():
        entry["weights_sha256"] = weights_sha256(path)
        return entry
    try:  # a hub id: the snapshot in the local cache, if there is one (never a download)
        from huggingface_hub import snapshot_download

        snapshot = Path(snapshot_download(loaded, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached, or no hub client: the hash is unknown, and says so
        entry["note"] = "hub model not in the local cache: weights not hashed"
        return entry
    entry.update(path=str(snapshot), revision=snapshot.name, weights_sha256=weights_sha256(snapshot))
    return entry


def benchmark_entry(name: str, data_dir, problems: list[dict]) -> dict:
    from torl.eval.benchmarks import resolve_benchmark

    kind, where = resolve_benchmark(name, data_dir)
    entry = {"problems": len(problems), "question_ids": [str(p["question_id"]) for p in problems]}
    if kind == "file":
        entry.update(file=str(where), sha256=file_sha256(Path(where)))
    else:
        entry.update(hub=where.dataset, split=where.split, config=where.config, sha256=None)
    return entry


def build_manifest(cfg, benchmarks: dict[str, list[dict]]) -> dict:
    import torl

    return {
        "torl_version": torl.__version__,
        "model": model_entry(cfg),
        "task": cfg.task.to_dict(),
        "decoding": {"temperature": cfg.temperature, "top_p": cfg.top_p, "n": cfg.n},  # the budget is the task's
        "engine": {"name": cfg.engine, "device": cfg.device},
        "benchmarks": {name: benchmark_entry(name, cfg.data_dir, problems) for name, problems in benchmarks.items()},
        "seeds": {"seed": cfg.seed, "per_sample": SEED_RULE},
    }
