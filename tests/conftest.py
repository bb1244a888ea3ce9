"""Shared pytest fixtures."""
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shipped_data() -> Path:
    """The data shipped in the package (benchmarks/<name>.jsonl, train/math_train.jsonl.gz): what a clone has."""
    from torl import bundled_data

    return bundled_data.ROOT


@pytest.fixture(scope="session")
def shared_data(shipped_data) -> Path:
    """Old name of `shipped_data` (tests no longer read ../shared); kept for branches written against it."""
    return shipped_data


def save_tiny_llama(out: Path, *, hidden_size: int = 32, heads: int = 4, kv_heads: int = 2) -> Path:
    """A 2-layer random Llama with SmolLM2's tokenizer, saved as an HF checkpoint in `out`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from torl.engines.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=2, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=1024, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """One tiny random Llama (`save_tiny_llama`) for every test of the session that trains on CPU."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


# What the tiny CPU training recipes share; each test passes only what it changes.
TINY_RECIPE = {
    "template": "torl", "max_tool_calls": 1, "sandbox_workers": 1, "use_cpu": True, "bf16": False,
    "num_generations": 4, "per_device_train_batch_size": 4, "max_response_tokens": 48,
    "learning_rate": 1.0e-2, "max_steps": 2, "save_steps": 1, "report_to": ["tensorboard"], "seed": 0,
}


def tiny_recipe(tmp_path: Path, model_dir: Path, *, name: str = "tiny.yaml", **overrides) -> Path:
    """Write a tiny training recipe to `tmp_path/name` and return its path.

    `model` is `model_dir` and `run_dir` is `tmp_path/run`; `overrides` replace TINY_RECIPE's keys or
    add new ones, and a key given as None is left out.
    """
    import yaml

    recipe = {"model": model_dir, **TINY_RECIPE, "run_dir": tmp_path / "run", **overrides}
    plain = {k: [str(x) if isinstance(x, Path) else x for x in v] if isinstance(v, list)
             else str(v) if isinstance(v, Path) else v for k, v in recipe.items() if v is not None}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(plain, sort_keys=False))
    return path


def write_questions(tmp_path: Path, questions, name: str = "questions.jsonl") -> Path:
    """A train file of "Compute $a \\times b$." questions, one per (a, b), answer a*b."""
    import json

    path = tmp_path / name
    path.write_text("".join(json.dumps({"id": f"q{a}x{b}", "problem": f"Compute ${a} \\times {b}$.",
                                        "answer": str(a * b), "source": "test"}) + "\n" for a, b in questions))
    return path
