"""VLLMEngine against a real vLLM (SmolLM2-135M on CPU). Runs only where vLLM imports:

    .venv-vllm/bin/python -m pytest tests/test_engine_vllm.py      (bash scripts/setup_vllm.sh first)

The engine is started once for the module (about a minute on a small CPU); tests run in order on
one event loop, and the last one shuts it down and checks no vLLM process is left.
"""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

pytest.importorskip("vllm")

import psutil
import pytest_asyncio
import torch
from safetensors.torch import load_file

from torl.engines.base import SamplingParams
from torl.engines.models import resolve_model
from torl.engines.vllm_engine import VLLMEngine, VLLMNotInstalled

pytestmark = pytest.mark.slow
on_module_loop = pytest.mark.asyncio(loop_scope="module")  # the engine lives on one event loop

GREEDY = SamplingParams(max_tokens=40, temperature=0.0)


@pytest.fixture(scope="module")
def checkpoint() -> str:
    return resolve_model("smollm2-135m")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(checkpoint):
    engine = VLLMEngine(checkpoint, dtype="float32", max_model_len=1024, seed=0)
    yield engine
    await engine.aclose()


def chat(engine, text: str) -> list[int]:
    ids = engine.tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


CODE_PROMPT = "Write Python code that prints the product of 12 and 13, in a ```python block."


@on_module_loop
async def test_stop_string_keeps_every_sampled_token(engine):
    prompt = chat(engine, CODE_PROMPT)
    full = await engine.generate(prompt, GREEDY)
    assert len(full.token_ids) > 12
    # A stop string that ends inside a token: vLLM trims its text there, but the ids must keep
    # the whole token, and our text is their decode.
    pieces = [engine.tokenizer.decode([t]) for t in full.token_ids]
    k = next(i for i in range(6, len(pieces) - 1) if len(pieces[i + 1]) >= 2 and not pieces[i + 1][0].isspace())
    stop = pieces[k] + pieces[k + 1][0]
    # The first prefix of the greedy output whose text contains the stop string.
    n = next(n for n in range(1, len(full.token_ids) + 1) if stop in engine.tokenizer.decode(full.token_ids[:n]))

    stopped = await engine.generate(prompt, SamplingParams(max_tokens=40, temperature=0.0, stop=(stop,)))

    assert stopped.finish_reason == "stop"
    assert stopped.stop_reason == stop
    assert stopped.token_ids == full.token_ids[:n]
    assert stopped.text == engine.tokenizer.decode(stopped.token_ids, skip_special_tokens=True)
    assert stop in stopped.text  # the matched text stays in the output
    assert stopped.logprobs == pytest.approx(full.logprobs[:n], abs=1e-4)


@on_module_loop
async def test_eos_and_length(engine):
    prompt = chat(engine, "Say hello.")
    done = await engine.generate(prompt, SamplingParams(max_tokens=200, temperature=0.0))
    assert done.finish_reason == "stop"
    assert done.stop_reason == done.token_ids[-1] == engine.tokenizer.eos_token_id
    assert engine.tokenizer.eos_token not in done.text

    cut = await engine.generate(prompt, SamplingParams(max_tokens=5, temperature=0.0, logprobs=False))
    assert cut.finish_reason == "length" and cut.stop_reason is None
    assert cut.token_ids == done.token_ids[:5]
    assert cut.logprobs is None


@on_module_loop
@pytest.mark.parametrize("temperature", [1.0, 0.7])
async def test_logprobs_match_transformers_forward(engine, checkpoint, temperature):
    from transformers import AutoModelForCausalLM

    prompt = chat(engine, "Compute 17 * 23 step by step.")
    params = SamplingParams(max_tokens=32, temperature=temperature, seed=1234)
    out = await engine.generate(prompt, params)
    assert len(out.logprobs) == len(out.token_ids) > 0

    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    ids = torch.tensor([prompt + out.token_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1] / temperature
    expected = torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(out.token_ids)[:, None])[:, 0]
    assert torch.tensor(out.logprobs) == pytest.approx(expected, abs=2e-3)


@on_module_loop
async def test_seed_makes_sampling_reproducible(engine):
    prompt = chat(engine, "Name a random animal and describe it.")
    params = SamplingParams(max_tokens=24, temperature=1.0, seed=7)
    first, again = await engine.generate(prompt, params), await engine.generate(prompt, params)
    assert first.token_ids == again.token_ids


@on_module_loop
async def test_sixteen_concurrent_requests(engine):
    questions = [f"What is {a} plus {a + 3}? Answer briefly." for a in range(8)]
    prompts = [chat(engine, q) for q in questions] * 2  # each prompt twice, all at once
    params = SamplingParams(max_tokens=32, temperature=0.0)
    start = time.perf_counter()
    results = await asyncio.gather(*(engine.generate(p, params) for p in prompts))
    elapsed = time.perf_counter() - start
    tokens = sum(len(r.token_ids) for r in results)
    print(f"\nvLLM: 16 concurrent requests, {tokens} tokens in {elapsed:.1f}s = {tokens / elapsed:.1f} tokens/s")
    for result in results:
        assert 0 < len(result.token_ids) <= 32
        assert len(result.logprobs) == len(result.token_ids)
        assert result.finish_reason in ("stop", "length")
    for first, second in zip(results[:8], results[8:]):  # greedy: the duplicate gets the same answer
        assert first.token_ids == second.token_ids
    assert len({tuple(r.token_ids) for r in results[:8]}) > 1  # different prompts, different answers


@on_module_loop
async def test_many_seeded_long_prompts_at_once(engine):
    # More prompt tokens than one scheduler step holds, each request with its own seed: vLLM-CPU
    # used to kill its engine here ("CPU Generator does not use offset") when it chunked a
    # seeded prefill. 32 prompts of ~250 tokens, as in a GRPO step with a few-shot template.
    preamble = "Here is a worked example. " * 40
    prompts = [chat(engine, f"{preamble}Now compute {100 + i} * {37 + i}.") for i in range(32)]
    assert sum(map(len, prompts)) > 4096
    results = await asyncio.gather(*(
        engine.generate(p, SamplingParams(max_tokens=8, temperature=1.0, seed=1000 + i))
        for i, p in enumerate(prompts)
    ))
    assert all(0 < len(r.token_ids) <= 8 and len(r.logprobs) == len(r.token_ids) for r in results)


@on_module_loop
async def test_load_weights_changes_then_restores_output(engine, checkpoint):
    prompt = chat(engine, CODE_PROMPT)
    params = SamplingParams(max_tokens=16, temperature=0.0)
    before = await engine.generate(prompt, params)
    original = load_file(f"{checkpoint}/model.safetensors")
    # Negating the final norm negates the logits: greedy picks from the other end of the vocab.
    perturbed = {name: (-t if name == "model.norm.weight" else t) for name, t in original.items()}

    await engine.load_weights(perturbed.items())
    changed = await engine.generate(prompt, params)
    assert changed.token_ids[0] != before.token_ids[0]

    await engine.load_weights(original.items())
    restored = await engine.generate(prompt, params)
    assert restored.token_ids == before.token_ids
    assert restored.logprobs == pytest.approx(before.logprobs, abs=1e-4)


def transformers_logprobs(checkpoint: str, weights: dict, prompt: list[int], tokens: list[int]) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    model.load_state_dict(weights, strict=False)
    model.tie_weights()  # the checkpoint has no lm_head: the head is the (new) embedding
    ids = torch.tensor([prompt + tokens])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1]
    return torch.log_softmax(logits.double(), dim=-1).gather(1, torch.tensor(tokens)[:, None])[:, 0]


@pytest.mark.parametrize("part", ["embed_tokens", "self_attn", "mlp", "layernorm"])
@on_module_loop
async def test_loaded_weights_take_effect_everywhere(engine, checkpoint, part):
    """After a load, vLLM's logprobs are those transformers computes with the new weights.

    SmolLM2 ties its output head to the input embedding: a new embedding must reach the logits
    too (on CPU the head keeps a packed copy that the reload used to leave stale).
    """
    prompt = chat(engine, CODE_PROMPT)
    original = load_file(f"{checkpoint}/model.safetensors")
    generator = torch.Generator().manual_seed(0)
    new = {name: (t + 0.02 * torch.randn(t.shape, generator=generator, dtype=t.dtype) if part in name else t)
           for name, t in original.items()}
    try:
        await engine.load_weights(new.items())
        out = await engine.generate(prompt, SamplingParams(max_tokens=8, temperature=0.0))
    finally:
        await engine.load_weights(original.items())
    in_vllm = torch.tensor(out.logprobs, dtype=torch.float64)
    under_new = transformers_logprobs(checkpoint, new, prompt, out.token_ids)
    under_old = transformers_logprobs(checkpoint, original, prompt, out.token_ids)
    assert (in_vllm - under_old).abs().max() > 1e-2  # the change is visible at all
    assert torch.allclose(in_vllm, under_new, atol=2e-3), (in_vllm - under_new)


@on_module_loop
async def test_load_weights_rejects_unknown_names_and_keeps_serving(engine):
    prompt = chat(engine, CODE_PROMPT)
    params = SamplingParams(max_tokens=8, temperature=0.0)
    before = await engine.generate(prompt, params)
    with pytest.raises(Exception, match="no parameter for.*model.not_a_layer.weight"):
        await engine.load_weights([("model.not_a_layer.weight", torch.zeros(3))])
    after = await engine.generate(prompt, params)
    assert after.token_ids == before.token_ids


def test_gpu_only_option_on_cpu_is_a_clear_error(checkpoint):
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        pytest.skip("vLLM runs on a GPU here")
    with pytest.raises(ValueError, match="gpu_memory_utilization is a GPU option"):
        VLLMEngine(checkpoint, gpu_memory_utilization=0.5)


def test_missing_vllm_names_the_setup_script(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail as if absent
    with pytest.raises(VLLMNotInstalled, match="scripts/setup_vllm.sh"):
        VLLMEngine("smollm2-135m")


@on_module_loop
async def test_aclose_leaves_no_processes(engine):
    """Last test: shuts the shared engine down."""
    assert any(_alive(p) for p in psutil.Process().children(recursive=True)), "vLLM should run engine processes"
    await engine.aclose()
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in psutil.Process().children(recursive=True)) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    left = [p for p in psutil.Process().children(recursive=True) if _alive(p)]
    assert not left, f"processes left after aclose: {[p.name() for p in left]}"


def _alive(process: psutil.Process) -> bool:
    """A live vLLM process; multiprocessing's resource tracker (a stdlib helper that exits with
    this interpreter) is not one."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE and not any(
            "resource_tracker" in part for part in process.cmdline()
        )
    except psutil.NoSuchProcess:
        return False
