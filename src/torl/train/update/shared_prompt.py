"""One prompt forward per GRPO group in the update: the same loss and gradient, a fraction of the compute.

TRL scores a micro-batch with one forward over prompt + completion for every row. In GRPO the rows
of a group share their prompt token for token, and on CPU the prompt is
most of each row: the demo's few-shot prompt is ~140 tokens, a completion ~40. Here the shared
prompt runs once, through the model's own forward with a KV cache, the cache is repeated for the
rows, and only the completions run per row, through TRL's fused log-prob head (the same kernel,
temperature and entropy as TRL's path). Positions and masks are those of the full forward, and
autograd sums the rows' gradients into the one prompt pass, so logps, entropies and gradients equal
TRL's up to float rounding (tests/test_train_shared_prompt.py checks both).

The split is at the prompt's last token, whose hidden state predicts the first completion token:
the prefix is everything before it, and the per-row pass starts with it.

It applies only where it is exact and safe: a text-only micro-batch whose rows all carry the same
prompt ids and mask, a model whose forward returns a `DynamicCache`, no gradient checkpointing
(which disables the cache) and one process (DDP/FSDP/ZeRO expect one forward per backward).
Anything else returns None and TRL's own path runs.
"""

from __future__ import annotations

import torch


def prompt_groups(input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int) -> list[list[int]]:
    """Row indices grouped by identical prompt (ids and mask), groups in order of first appearance. TRL
    shuffles a generation batch before splitting it into micro-batches, so a group's rows need not be
    adjacent."""
    prompt_len = input_ids.size(1) - logits_to_keep
    keys = torch.cat([input_ids[:, :prompt_len], attention_mask[:, :prompt_len]], dim=1).tolist()
    groups: dict[tuple, list[int]] = {}
    for row, key in enumerate(keys):
        groups.setdefault(tuple(key), []).append(row)
    return list(groups.values())


def shares_one_prompt(input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int) -> bool:
    """Whether every row has the same prompt (ids and mask) before its `logits_to_keep` completion tokens."""
    prompt_len = input_ids.size(1) - logits_to_keep
    if input_ids.size(0) < 2 or prompt_len < 2:
        return False
    ids, mask = input_ids[:, :prompt_len], attention_mask[:, :prompt_len]
    return bool((ids == ids[:1]).all() and (mask == mask[:1]).all())


def shared_prompt_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int,
                        compute_entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """Per-token logps (and entropies) of the completions, as TRL's `_get_per_token_logps_and_entropies`
    computes them for one chunk; None when the chunk does not share one prompt or the model has no cache."""
    if not shares_one_prompt(input_ids, attention_mask, logits_to_keep):
        return None
    from transformers import DynamicCache

    rows = input_ids.size(0)
    split = input_ids.size(1) - logits_to_keep - 1  # the prompt's last token starts the per-row pass
    prefix = model(input_ids=input_ids[:1, :split], attention_mask=attention_mask[:1, :split],
                   use_cache=True, logits_to_keep=1)
    cache = getattr(prefix, "past_key_values", None)
    if not isinstance(cache, DynamicCache) or cache.get_seq_length() != split:
        return None
    cache.batch_repeat_interleave(rows)
    tail = input_ids[:, split:]
    labels = tail.masked_fill(attention_mask[:, split:] == 0, -100)
    labels[:, 0] = -100  # the prompt's last token is context, as in TRL's labels
    out = model(input_ids=tail, attention_mask=attention_mask, past_key_values=cache, labels=labels,
                fused_lm_head=True)
    logps = out.log_probs[:, -logits_to_keep:]
    entropies = out.entropy[:, -logits_to_keep:] if compute_entropy else None
    return logps, entropies
