"""OpenAIEngine: response parsing against an in-process fake server (fast), an unreachable URL,
and a real `vllm serve` started from .venv-vllm (slow; skipped with a reason where absent, failed in CI).

    .venv/bin/python -m pytest tests/test_engine_openai.py
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import torch

from torl.engines.base import SamplingParams
from torl.engines.models import resolve_model
from torl.engines.openai_engine import OpenAIEngine, ServerError, ServerUnreachable

# scripts/setup_vllm.sh makes it in this checkout, wherever that lives.
VLLM_PYTHON = os.environ.get("TORL_VLLM_PYTHON", str(Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"))
BASE = "http://fake.test/v1"


@pytest.fixture(scope="module")
def checkpoint() -> str:
    return resolve_model("smollm2-135m")


@pytest.fixture(scope="module")
def tokenizer(checkpoint):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(checkpoint)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------- fake server: parsing logic


def vllm_choice(ids, logprobs, finish="length", stop_reason=None, text="x"):
    """A /v1/completions choice shaped like vLLM's with return_tokens_as_token_ids."""
    return {
        "text": text,
        "finish_reason": finish,
        "stop_reason": stop_reason,
        "logprobs": {"tokens": [f"token_id:{i}" for i in ids], "token_logprobs": logprobs},
    }


def fake_engine(tokenizer, handler, **kw) -> tuple[OpenAIEngine, list[dict]]:
    """An engine whose HTTP requests go to `handler(payload) -> (status, body)`; returns the log of payloads."""
    seen: list[dict] = []

    def respond(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/completions"
        payload = json.loads(request.content)
        seen.append(payload)
        status, body = handler(payload)
        return httpx.Response(status, json=body)

    kw.setdefault("backoff_s", 0.0)
    return OpenAIEngine(BASE, "m", tokenizer, transport=httpx.MockTransport(respond), **kw), seen


async def test_token_ids_and_logprobs_come_back_exactly(tokenizer):
    ids = tokenizer.encode(" Hello world, 12*13=156", add_special_tokens=False)
    lps = [-0.5 - i for i in range(len(ids))]
    engine, seen = fake_engine(tokenizer, lambda p: (200, {"choices": [vllm_choice(ids, lps, "stop", "=156")]}))
    params = SamplingParams(max_tokens=20, temperature=0.6, top_k=5, stop=("=156",), seed=3)
    out = await engine.generate([1, 2, 3], params)
    await engine.aclose()

    assert out.token_ids == ids and out.logprobs == lps
    assert out.text == tokenizer.decode(ids) and out.finish_reason == "stop" and out.stop_reason == "=156"
    sent = seen[0]
    assert sent["prompt"] == [1, 2, 3] and sent["model"] == "m"
    assert sent["logprobs"] == 0 and sent["return_tokens_as_token_ids"] is True
    assert sent["include_stop_str_in_output"] is True
    assert (sent["stop"], sent["seed"], sent["top_k"], sent["temperature"]) == (["=156"], 3, 5, 0.6)


async def test_eos_is_the_stop_reason_and_logprobs_can_be_off(tokenizer):
    eos = tokenizer.eos_token_id
    engine, seen = fake_engine(tokenizer, lambda p: (200, {"choices": [vllm_choice([42, eos], [-1.0, -2.0], "stop")]}))
    out = await engine.generate([5], SamplingParams(max_tokens=4, logprobs=False))
    assert out.token_ids == [42, eos] and out.stop_reason == eos and out.logprobs is None
    assert "top_k" not in seen[0] and "stop" not in seen[0]
    assert seen[0]["logprobs"] == 0  # still asked for: it carries the token ids


async def test_auto_falls_back_to_text_prompts_once(tokenizer):
    def handler(payload):
        if isinstance(payload["prompt"], list):
            return 400, {"error": {"message": "prompt must be a string"}}
        return 200, {"choices": [vllm_choice([7], [-0.1])]}

    engine, seen = fake_engine(tokenizer, handler)
    prompt = tokenizer.encode("What is 2+2?", add_special_tokens=False)
    with pytest.warns(RuntimeWarning, match="rejected a token-id prompt"):
        first = await engine.generate(prompt, SamplingParams(max_tokens=1))
    second = await engine.generate(prompt, SamplingParams(max_tokens=1))
    assert first.token_ids == second.token_ids == [7]
    assert [type(p["prompt"]) for p in seen] == [list, str, str]
    assert seen[1]["prompt"] == "What is 2+2?"


async def test_auto_keeps_token_prompts_when_text_fails_too(tokenizer):
    engine, _ = fake_engine(tokenizer, lambda p: (400, {"error": {"message": "max_tokens too large"}}))
    with pytest.raises(ServerError, match="HTTP 400: max_tokens too large"):
        await engine.generate([1, 2], SamplingParams(max_tokens=1))
    assert engine.token_prompts == "auto"


async def test_token_prompts_true_makes_a_rejection_an_error(tokenizer):
    engine, seen = fake_engine(tokenizer, lambda p: (400, {"error": {"message": "no ids"}}), token_prompts=True)
    with pytest.raises(ServerError, match="fake.test/v1/completions answered HTTP 400: no ids"):
        await engine.generate([1, 2], SamplingParams(max_tokens=1))
    assert len(seen) == 1


async def test_server_without_token_ids_is_retokenized_with_a_warning(tokenizer):
    # SGLang-like: token strings, not ids; stop string cut from the text and named in matched_stop.
    text = "print(12*13)\n"
    choice = {"text": text, "finish_reason": "stop", "matched_stop": "```",
              "logprobs": {"tokens": ["print", "(", "12"], "token_logprobs": [-0.1, -0.2, -0.3]}}
    engine, _ = fake_engine(tokenizer, lambda p: (200, {"choices": [choice]}))
    with pytest.warns(RuntimeWarning, match="re-tokenizing"):
        out = await engine.generate([1], SamplingParams(max_tokens=9))
    assert out.text == text + "```" and out.stop_reason == "```"
    assert out.token_ids == tokenizer.encode(text + "```", add_special_tokens=False)
    assert out.logprobs is None  # 3 logprobs cannot be aligned with the re-tokenized ids


async def test_transient_errors_are_retried_then_reported(tokenizer):
    answers = iter([(503, {"error": "busy"}), (502, {"error": "gateway"}), (200, {"choices": [vllm_choice([9], [-1.0])]})])
    engine, seen = fake_engine(tokenizer, lambda p: next(answers), retries=2)
    assert (await engine.generate([1], SamplingParams(max_tokens=1))).token_ids == [9]
    assert len(seen) == 3

    engine, seen = fake_engine(tokenizer, lambda p: (503, {"error": "busy"}), retries=1)
    with pytest.raises(ServerError, match="HTTP 503: busy"):
        await engine.generate([1], SamplingParams(max_tokens=1))
    assert len(seen) == 2


async def test_aborted_generation_is_an_error_not_a_result(tokenizer):
    engine, _ = fake_engine(tokenizer, lambda p: (200, {"choices": [vllm_choice([1], [-1.0], "abort")]}))
    with pytest.raises(ServerError, match="finish_reason='abort'"):
        await engine.generate([1], SamplingParams(max_tokens=1))


async def test_max_connections_bounds_requests_in_flight(tokenizer):
    in_flight, peak = 0, 0

    async def respond(request):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return httpx.Response(200, json={"choices": [vllm_choice([3], [-0.3])]})

    engine = OpenAIEngine(BASE, "m", tokenizer, max_connections=3, transport=httpx.MockTransport(respond))
    results = await asyncio.gather(*(engine.generate([1], SamplingParams(max_tokens=1)) for _ in range(12)))
    assert [r.token_ids for r in results] == [[3]] * 12
    assert peak == 3


async def test_unreachable_server_is_one_clear_error(tokenizer):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    engine = OpenAIEngine(url, "m", tokenizer, retries=2, backoff_s=0.01)
    with pytest.raises(ServerUnreachable, match=rf"cannot reach .* at {url}/completions .* after 3 attempt"):
        await engine.generate([1, 2], SamplingParams(max_tokens=4))
    await engine.aclose()


# ---------------------------------------------------------------- a real vLLM server


@pytest.fixture(scope="module")
def vllm_server(checkpoint, tmp_path_factory):
    """`vllm serve` (OpenAI API) on a free 127.0.0.1 port, from the vLLM environment."""
    if not Path(VLLM_PYTHON).exists():
        message = f"no vLLM environment at {VLLM_PYTHON}: run scripts/setup_vllm.sh or set TORL_VLLM_PYTHON"
        if os.environ.get("CI") and os.environ.get("TORL_SKIP_VLLM") != "1":
            pytest.fail(message)  # CI sets it up (scripts/test.sh): missing there is a broken set-up, not a skip
        pytest.skip(message)
    port = free_port()
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    command = [
        VLLM_PYTHON, "-m", "vllm.entrypoints.openai.api_server", "--model", checkpoint,
        "--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float32", "--max-model-len", "1024", "--enforce-eager",
        "--kv-cache-memory-bytes", str(1 << 30), "--logprobs-mode", "processed_logprobs",
        "--uvicorn-log-level", "warning",
    ]  # fmt: skip
    with open(log, "w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 900  # loading takes ~1-3 min on a busy 2-core CPU
        while True:
            if server.poll() is not None:
                pytest.fail(f"vllm serve exited with {server.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm serve not healthy after 900 s:\n{log.read_text()[-3000:]}")
            time.sleep(2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest_asyncio.fixture
async def served(vllm_server, tokenizer):
    engine = OpenAIEngine(vllm_server, "smollm2", tokenizer, token_prompts=True)
    yield engine
    await engine.aclose()


def chat(tokenizer, text: str) -> list[int]:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


@pytest.mark.slow
async def test_vllm_server_token_ids_and_logprobs_are_exact(served, tokenizer, checkpoint):
    from transformers import AutoModelForCausalLM

    prompt = chat(tokenizer, "Compute 17 * 23 step by step.")
    out = await served.generate(prompt, SamplingParams(max_tokens=32, temperature=0.8, seed=5))
    assert len(out.token_ids) == len(out.logprobs) > 0
    assert out.text == tokenizer.decode(out.token_ids, skip_special_tokens=True)
    # The ids are the sampled ones iff a teacher-forced forward pass gives the server's logprobs.
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([prompt + out.token_ids])).logits[0, len(prompt) - 1 : -1] / 0.8
    expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(out.token_ids)[:, None])[:, 0]
    assert torch.tensor(out.logprobs) == pytest.approx(expected, abs=2e-3)


@pytest.mark.slow
async def test_vllm_server_stop_strings_and_eos(served, tokenizer):
    prompt = chat(tokenizer, "Write Python code that prints the product of 12 and 13, in a ```python block.")
    full = await served.generate(prompt, SamplingParams(max_tokens=40, temperature=0.0))
    pieces = [tokenizer.decode([t]) for t in full.token_ids]
    k = next(i for i in range(6, len(pieces) - 1) if len(pieces[i + 1]) >= 2 and not pieces[i + 1][0].isspace())
    stop = pieces[k] + pieces[k + 1][0]  # ends inside a token
    n = next(n for n in range(1, len(full.token_ids) + 1) if stop in tokenizer.decode(full.token_ids[:n]))

    stopped = await served.generate(prompt, SamplingParams(max_tokens=40, temperature=0.0, stop=(stop,)))
    assert (stopped.finish_reason, stopped.stop_reason) == ("stop", stop)
    assert stopped.token_ids == full.token_ids[:n]  # every sampled token, the stop string's included
    assert stop in stopped.text

    done = await served.generate(chat(tokenizer, "Say hello."), SamplingParams(max_tokens=200, temperature=0.0))
    assert done.finish_reason == "stop" and done.stop_reason == done.token_ids[-1] == tokenizer.eos_token_id


@pytest.mark.slow
async def test_vllm_server_concurrent_requests_and_text_prompts(served, vllm_server, tokenizer):
    prompts = [chat(tokenizer, f"What is {a} plus {a + 3}? Answer briefly.") for a in range(16)]
    params = SamplingParams(max_tokens=24, temperature=0.0)
    start = time.perf_counter()
    results = await asyncio.gather(*(served.generate(p, params) for p in prompts))
    elapsed = time.perf_counter() - start
    tokens = sum(len(r.token_ids) for r in results)
    print(f"\nvllm serve: 16 concurrent requests, {tokens} tokens in {elapsed:.1f}s = {tokens / elapsed:.1f} tokens/s")
    assert all(len(r.logprobs) == len(r.token_ids) > 0 for r in results)

    # Text prompts (what a server without id prompts gets) re-tokenize to the same prompt here.
    async with OpenAIEngine(vllm_server, "smollm2", tokenizer, token_prompts=False) as text_engine:
        again = await text_engine.generate(prompts[0], params)
    assert again.token_ids == results[0].token_ids
