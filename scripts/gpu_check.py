"""Helpers for scripts/gpu_check.sh (read that first): a random-weight model, the data, one timed train step.

    python scripts/gpu_check.py model --size real|tiny --out DIR   # Qwen2.5-1.5B's architecture, random weights
    python scripts/gpu_check.py data --out DIR                     # train.jsonl (64) and eval.jsonl (8): arithmetic records
    python scripts/gpu_check.py train -- <torl train arguments>    # one run, timed, with peak GPU memory

No network: the architecture is written out below (Qwen2.5-1.5B's published config.json), and the
tokenizer is SmolLM2's (carried in wheels/smollm2-tokenizer/ by scripts/fetch_gpu_wheels.sh, or
torl's built-in copy), so the vocabulary is SmolLM2's 49152 tokens instead of Qwen's 151936: the
model has 1.39B parameters instead of 1.54B, every other dimension is Qwen2.5-1.5B's.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CARRIED_TOKENIZER = ROOT / "wheels" / "smollm2-tokenizer"

# Qwen/Qwen2.5-1.5B config.json, vocab_size excepted (see the module docstring).
QWEN25_1P5B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
    "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
    "num_key_value_heads": 2, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
    "tie_word_embeddings": True, "use_sliding_window": False, "attention_dropout": 0.0, "initializer_range": 0.02,
}
TINY = dict(QWEN25_1P5B, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2)


def tokenizer_dir() -> str:
    if (CARRIED_TOKENIZER / "tokenizer.json").exists():
        return str(CARRIED_TOKENIZER)
    from torl.engines.models import resolve_model

    return resolve_model("smollm2-135m")


def make_model(size: str, out: Path) -> None:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir())
    fields = dict(QWEN25_1P5B if size == "real" else TINY, vocab_size=len(tokenizer),
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id)
    fields.pop("architectures"), fields.pop("model_type")
    config = Qwen2Config(**fields)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.device(device):
        model = Qwen2ForCausalLM(config)
    model = model.to(torch.bfloat16 if size == "real" else torch.float32)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: Qwen2.5-1.5B architecture ({size}), random weights, {params / 1e9:.3f}B parameters, "
          f"vocab {config.vocab_size}, written to {out} in {time.perf_counter() - start:.0f} s")


def make_data(out: Path, train: int = 64, held_out: int = 8) -> None:
    """Records in torl's format: the recipe's data files are not on a bare GPU machine."""
    rng = random.Random(0)
    out.mkdir(parents=True, exist_ok=True)
    for name, first, count in (("train", 0, train), ("eval", train, held_out)):
        with (out / f"{name}.jsonl").open("w") as f:
            for i in range(first, first + count):
                a, b = rng.randint(100, 999), rng.randint(10, 99)
                f.write(json.dumps({"id": f"gpu-check-{i}", "problem": f"Compute ${a} \\times {b}$.",
                                    "answer": str(a * b), "source": "gpu_check"}) + "\n")
    print(f"data: {train} training and {held_out} held-out arithmetic records in {out}")


def train(argv: list[str]) -> int:
    """`torl train argv` in this process, so the peak GPU memory of the whole run can be read."""
    import torch

    from torl.cli import main

    start = time.perf_counter()
    try:
        code = main(["train", *argv])
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    wall = time.perf_counter() - start
    run_dir = Path(argv[argv.index("--run_dir") + 1])
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()] if (run_dir / "metrics.jsonl").exists() else []
    timing = {k: round(v, 3) for row in steps for k, v in row.items()
              if (k.startswith("time/") or k == "step_time") and isinstance(v, float)}
    skipped = [int(row.get("signal/skipped_microbatches") or 0) for row in steps]
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
    print(f"train: exit {code}, wall {wall:.1f} s (model load and setup included), steps logged {len(steps)}, "
          f"micro-batches without forward/backward {skipped}, peak GPU memory {peak:.2f} GiB; "
          f"step timings {json.dumps(timing)}")
    return code


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("model")
    m.add_argument("--size", choices=("real", "tiny"), default="real")
    m.add_argument("--out", type=Path, required=True)
    d = sub.add_parser("data")
    d.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("train")
    t.add_argument("rest", nargs=argparse.REMAINDER)
    args = p.parse_args()
    if args.command == "model":
        make_model(args.size, args.out)
    elif args.command == "data":
        make_data(args.out)
    else:
        sys.exit(train([a for a in args.rest if a != "--"]))


if __name__ == "__main__":
    main()
