"""One prompt forward per group (torl.train.update.shared_prompt) gives TRL's logps, entropies and gradients."""

import pytest
import torch
from trl.trainer.utils import add_fused_lm_head

from torl.train.update.shared_prompt import prompt_groups, shared_prompt_logps

TEMPERATURE = 0.7


def tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    add_fused_lm_head(model, temperature=TEMPERATURE, outputs=("log_probs", "entropy"))
    return model


def trl_logps(model, input_ids, attention_mask, logits_to_keep):
    """TRL 1.16's `_get_per_token_logps_and_entropies` for one chunk, as it scores it."""
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[:, :-logits_to_keep] = -100
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True)
    return out.log_probs[:, -logits_to_keep:], out.entropy[:, -logits_to_keep:]


def group_batch(rows=4, prompt_len=9, pad=2, completion_len=6, seed=1):
    """One group: a left-padded prompt shared by every row, right-padded completions of different lengths."""
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(1, 128, (prompt_len,), generator=g)
    prompt[:pad] = 0
    completions = torch.randint(1, 128, (rows, completion_len), generator=g)
    ids = torch.cat([prompt.expand(rows, -1), completions], dim=1)
    mask = torch.ones_like(ids)
    mask[:, :pad] = 0
    for r in range(rows):  # row r ends r tokens early (padding after its EOS)
        if r:
            mask[r, -r:] = 0
            ids[r, -r:] = 0
    return ids, mask, completion_len


def test_logps_entropies_and_gradients_equal_trls():
    ids, mask, keep = group_batch()
    model = tiny_model()
    ref_logps, ref_entropy = trl_logps(model, ids, mask, keep)
    weights = torch.randn(ref_logps.shape, generator=torch.Generator().manual_seed(2)) * mask[:, -keep:]
    (ref_logps * weights).sum().backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    logps, entropy = shared_prompt_logps(model, ids, mask, keep, compute_entropy=True)
    (logps * weights).sum().backward()

    valid = mask[:, -keep:].bool()
    torch.testing.assert_close(logps[valid], ref_logps[valid], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(entropy[valid], ref_entropy[valid], rtol=1e-5, atol=1e-5)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    assert any(g.abs().sum() > 0 for g in ref_grads.values())


def test_rows_with_different_prompts_are_not_shared():
    ids, mask, keep = group_batch()
    ids[1, 3] = (ids[1, 3] + 1) % 128 or 1  # row 1 now has another prompt
    assert shared_prompt_logps(tiny_model(), ids, mask, keep, compute_entropy=False) is None


def test_prompt_groups_find_a_groups_rows_wherever_they_are():
    a, mask_a, keep = group_batch(rows=3, seed=1)
    b, mask_b, _ = group_batch(rows=2, seed=2)
    ids, mask = torch.cat([a[:1], b[:1], a[1:], b[1:]]), torch.cat([mask_a[:1], mask_b[:1], mask_a[1:], mask_b[1:]])
    assert prompt_groups(ids, mask, keep) == [[0, 2, 3], [1, 4]]


@pytest.mark.parametrize("share", [True, False])
def test_trainer_scores_a_two_group_batch_like_trl(share):
    """ToolGRPOTrainer's override gives TRL's result on a batch of two groups, sharing on or off."""
    from torl.train.update.grpo import ToolGRPOTrainer

    a, mask_a, keep = group_batch(rows=3, seed=1)
    b, mask_b, _ = group_batch(rows=3, seed=3)
    shuffled = torch.tensor([3, 0, 4, 1, 2, 5])  # TRL shuffles a generation batch before splitting it
    ids, mask = torch.cat([a, b])[shuffled], torch.cat([mask_a, mask_b])[shuffled]
    model = tiny_model()
    trainer = ToolGRPOTrainer.__new__(ToolGRPOTrainer)  # only the scoring method is exercised
    trainer.share_prompt_forward = share
    from accelerate import Accelerator

    trainer.accelerator = Accelerator(cpu=True)  # TRL's path runs its forward under accelerator.autocast()
    logps, entropy, aux = trainer._get_per_token_logps_and_entropies(model, ids, mask, keep, compute_entropy=True)
    ref_logps, ref_entropy = trl_logps(model, ids, mask, keep)
    valid = mask[:, -keep:].bool()
    torch.testing.assert_close(logps[valid], ref_logps[valid], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(entropy[valid], ref_entropy[valid], rtol=1e-5, atol=1e-5)
    assert aux is None
