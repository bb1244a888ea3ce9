"""Protocol tool_calls through the OpenAI-compatible engine (what `torl eval --engine openai` drives a
served instruct model with): token ids in and out, the stop at </tool_call>, the tool turn appended."""

from __future__ import annotations

import json

import httpx
import pytest

from torl.engines.models import resolve_model
from torl.engines.openai_engine import OpenAIEngine
from torl.eval.runner import EvalConfig
from torl.tir.loop import encode_prompt, rollout
from torl.tir.tool_parsing import CALL_CLOSE

CALL = 'Let me compute.\n<tool_call>\n{"name": "python", "arguments": {"code": "print(6 * 7)"}}\n</tool_call>'


class Sandbox:
    """Stands in for the sandbox: this test is about the engine and the protocol."""

    async def run(self, code, **kw):
        from torl.sandbox.result import ExecResult, ExecStatus

        assert code == "print(6 * 7)\n"
        return ExecResult(ExecStatus.OK, stdout="42\n", exit_code=0)

    async def open_session(self):
        return None


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))


async def test_a_served_chat_model_calls_python_by_tool_call(tokenizer, tmp_path):
    task = EvalConfig(model="m", benchmarks=["b"], out_dir=str(tmp_path),
                      overrides={"protocol": "tool_calls"}).task
    assert (task.template, task.protocol, task.call_trigger) == ("chat_tools", "tool_calls", "call_end")
    turns = [tokenizer.encode(CALL, add_special_tokens=False),
             tokenizer.encode("The answer is \\boxed{42}.", add_special_tokens=False) + [tokenizer.eos_token_id]]
    seen = []

    def respond(request: httpx.Request) -> httpx.Response:
        payload = json.loads(request.content)
        seen.append(payload)
        ids = turns[len(seen) - 1]
        stop = CALL_CLOSE if len(seen) == 1 else None
        assert payload.get("stop", []) == ([CALL_CLOSE] if len(seen) == 1 else [])
        return httpx.Response(200, json={"choices": [{
            "text": tokenizer.decode(ids), "finish_reason": "stop", "stop_reason": stop,
            "logprobs": {"tokens": [f"token_id:{i}" for i in ids], "token_logprobs": [-0.25] * len(ids)}}]})

    engine = OpenAIEngine("http://fake.test/v1", "m", tokenizer, transport=httpx.MockTransport(respond), backoff_s=0.0)
    config = task.rollout_config(temperature=0.0, seed=0)
    prompt = encode_prompt(task.prompt_template(), "What is 6*7?", tokenizer, config)
    async with engine:
        traj = await rollout(engine, Sandbox(), prompt, config)
    assert [c.observation for c in traj.calls] == ["42"] and traj.finish_reason == "stop"
    appended = traj.completion_ids[traj.calls[0].token_start:traj.calls[0].token_end]
    assert tokenizer.decode(appended) == "<|im_end|>\n<|im_start|>tool\n42<|im_end|>\n<|im_start|>assistant\n"
    assert seen[1]["prompt"] == prompt + turns[0] + appended  # token-in: exactly what was sampled and appended
    assert traj.completion_ids == turns[0] + appended + turns[1]
    assert traj.logprobs == [-0.25] * len(turns[0]) + [0.0] * len(appended) + [-0.25] * len(turns[1])
