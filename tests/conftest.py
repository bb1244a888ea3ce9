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
