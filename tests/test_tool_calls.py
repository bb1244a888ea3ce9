"""Protocol tool_calls: hermes-style calls through a real chat template, token for token.

SmolLM2-135M-Instruct's own tokenizer and chat template (no tool support: the tools go into the
system message), and the same vocabulary under a hermes template written here that renders
`tools` natively and groups tool results into one user turn (as Qwen2.5's does). The model's
turns are scripted (ScriptedEngine tokenizes them with the real tokenizer), the python tool runs
in an in-process stand-in sandbox, `search` over a corpus the test writes.
"""

from __future__ import annotations

import asyncio
import copy
import json

import pytest
from test_tir_loop import FakeSandbox

from torl.engines.models import resolve_model
from torl.engines.scripted import ScriptedEngine, scripted_logprob
from torl.errors import UserError
from torl.tir.chat_tools import (
    ToolTurnRenderer,
    check_prefix_preserving,
    supports_tools,
)
from torl.tir.loop import encode_prompt, rollout
from torl.tir.task import TaskSpec
from torl.tir.templates import get_template
from torl.tir.tool_parsing import parse_tool_calls
from torl.tools import FunctionTool, ToolError, build_toolset, register_tool
from torl.train.update.contract import trajectory_problems

HERMES_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n"
    "{%- if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\n\n{%- endif %}"
    "# Tools\n<tools>{% for t in tools %}\n{{ t | tojson }}{% endfor %}\n</tools>\n"
    "Call one as <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call><|im_end|>\n"
    "{%- elif messages[0]['role'] == 'system' %}<|im_start|>system\n{{ messages[0]['content'] }}<|im_end|>\n"
    "{%- endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'user' or (m.role == 'assistant') %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
    "{%- elif m.role == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}<|im_start|>user{% endif %}"
    "\n<tool_response>\n{{ m.content }}\n</tool_response>"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}<|im_end|>\n{% endif %}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Not prefix-preserving: earlier assistant turns lose their tool calls when rendered again (like
# templates that drop earlier reasoning), so a rendered conversation differs from what was sampled.
DROPPING_TEMPLATE = (
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n"
    "{%- if m.role == 'assistant' and not loop.last %}{{ m.content.split('<tool_call>')[0] }}"
    "{%- else %}{{ m.content }}{%- endif %}<|im_end|>\n{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    {"id": "d1", "title": "Mount Kilimanjaro", "text": "Kilimanjaro is 5895 metres high, the tallest mountain in Africa."},
    {"id": "d2", "title": "Lake Baikal", "text": "Baikal is the deepest lake in the world, 1642 metres deep."},
    {"id": "d3", "title": "River Nile", "text": "The Nile flows north through eleven countries into the Mediterranean."},
]


@pytest.fixture(scope="module")
def smol():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))


@pytest.fixture(scope="module")
def hermes(smol):
    tok = copy.deepcopy(smol)
    tok.chat_template = HERMES_TEMPLATE
    return tok


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in CORPUS))
    return str(path)


def call(name, **arguments):
    return f'Let me use {name}.\n<tool_call>\n{json.dumps({"name": name, "arguments": arguments})}\n</tool_call>'


def spec(corpus=None, **kw):
    kw.setdefault("tools", ("python", "search") if corpus else ("python",))
    return TaskSpec(template="chat_tools", protocol="tool_calls", search_corpus=corpus, **kw)


def run(tokenizer, script, task, question="What is 6*7?", sandbox=None):
    engine = ScriptedEngine(tokenizer, script)
    config = task.rollout_config(temperature=1.0, seed=0)
    prompt = encode_prompt(task.prompt_template(), question, tokenizer, config)
    return asyncio.run(rollout(engine, sandbox or FakeSandbox(), prompt, config)), prompt


def test_template_detection_and_prefix_check(smol, hermes):
    assert not supports_tools(smol) and supports_tools(hermes)
    tools = build_toolset(["python"])
    for tok in (smol, hermes):
        check_prefix_preserving(ToolTurnRenderer(tok, tools.schemas()), "python")
    bad = copy.deepcopy(smol)
    bad.chat_template = DROPPING_TEMPLATE
    with pytest.raises(UserError, match="not prefix-preserving.*protocol: code_blocks") as err:
        check_prefix_preserving(ToolTurnRenderer(bad, tools.schemas()), "python")
    assert "smollm2" in str(err.value) and "\n" not in str(err.value)
    # the loop runs the check before the first trajectory
    with pytest.raises(UserError, match="not prefix-preserving"):
        run(bad, [call("python", code="print(1)"), "done"], spec())


@pytest.mark.parametrize("template", ["smol", "hermes"])
@pytest.mark.parametrize("calls", [0, 1, 2, 3])
def test_exact_ids_masks_logprobs_over_c_and_two_tools(request, template, calls, corpus):
    tok = request.getfixturevalue(template)
    turns = [call("python", code=f"print({k} * 7)") if k % 2 == 0 else call("search", query="deepest lake")
             for k in range(calls)] + ["So the answer is \\boxed{42}."]
    task = spec(corpus, max_tool_calls=calls)
    traj, prompt = run(tok, turns, task)

    assert traj.finish_reason == "stop" and len(traj.calls) == calls and not traj.skipped_calls
    assert [c.tool for c in traj.calls] == ["python" if k % 2 == 0 else "search" for k in range(calls)]
    assert [c.error for c in traj.calls] == [None] * calls
    observations = [f"{k * 7}" if k % 2 == 0 else traj.calls[k].observation for k in range(calls)]
    assert all("Baikal" in o for o in observations[1::2])
    # exact ids: each model turn as tokenized, then the tool turn the template writes, then EOS at the end
    renderer = ToolTurnRenderer(tok, task.toolset().schemas())
    expected_ids, expected_mask = [], []
    for k, turn in enumerate(turns):
        ids = tok(turn, add_special_tokens=False).input_ids + ([tok.eos_token_id] if k == calls else [])
        expected_ids += ids
        expected_mask += [1] * len(ids)
        if k < calls:
            piece = renderer.encode(renderer.observation_pieces([observations[k]], model_ended_turn=False)[0])
            assert traj.calls[k].token_start == len(expected_ids)
            expected_ids += piece
            expected_mask += [0] * len(piece)
            assert traj.calls[k].token_end == len(expected_ids)
    assert traj.completion_ids == expected_ids and traj.loss_mask == expected_mask
    assert traj.logprobs == [scripted_logprob(t) if m else 0.0 for t, m in zip(expected_ids, expected_mask, strict=True)]
    # ... and the whole is exactly the template's rendering of the conversation (prefix-preserving)
    messages = [{"role": "system", "content": renderer.system_prompt(None)}] if not renderer.native else []
    messages.append({"role": "user", "content": get_template("chat_tools")._fill("What is 6*7?")})
    for k, turn in enumerate(turns):
        messages.append({"role": "assistant", "content": turn})
        if k < calls:
            messages.append({"role": "tool", "content": observations[k]})
    full = tok.apply_chat_template(messages, tools=renderer.schemas if renderer.native else None, tokenize=False)
    assert prompt + traj.completion_ids == tok(full.removesuffix("\n"), add_special_tokens=False).input_ids
    assert trajectory_problems(traj.to_dict(), lambda ids: tok.decode(ids, skip_special_tokens=True)) == []


def test_malformed_unknown_and_bad_arguments_become_observations(smol):
    turns = [
        'Try.\n<tool_call>\n{"name": "python", "arguments": {"code": "print(1)"\n</tool_call>',   # bad JSON
        '<tool_call>{"name": "calculator", "arguments": {"x": 1}}</tool_call>',               # unknown tool
        '<tool_call>{"name": "python", "arguments": {"cmd": "print(1)"}}</tool_call>',        # missing/extra
        "\\boxed{1}",
    ]
    traj, _ = run(smol, turns, spec(max_tool_calls=3, error_marker=True))
    assert [c.error for c in traj.calls] == ["parse_error", "unknown_tool", "bad_arguments"]
    assert not traj.sandbox_error and traj.finish_reason == "stop"
    assert "not valid JSON" in traj.calls[0].observation and traj.calls[0].observation.startswith("<error>\n")
    assert "unknown tool 'calculator'" in traj.calls[1].observation and "python" in traj.calls[1].observation
    assert "missing required argument(s): code" in traj.calls[2].observation
    assert all(c.result.status.value == "error" for c in traj.calls)
    assert "<error>" in traj.text  # the model reads it


def test_parser_tolerates_real_model_output():
    calls = parse_tool_calls(
        '<tool_call>{"name": "a", "arguments": "{\\"x\\": 1}"}</tool_call> text '
        '<tool_call>[{"name": "b", "parameters": {"y": 2}}, {"name": "c"}]</tool_call>'
        "<tool_call>[1, 2]</tool_call><tool_call>{\"arguments\": {}}</tool_call><tool_call>{\"name\": \"d\"")
    assert [(c.name, c.arguments, bool(c.error)) for c in calls] == [
        ("a", {"x": 1}, False), ("b", {"y": 2}, False), ("c", {}, False), (None, None, True), (None, None, True),
        (None, None, True)]  # the unclosed last one is not a call


def test_several_calls_in_one_turn_run_in_order_within_budget(smol, hermes, corpus):
    both = (call("python", code="print(2 + 2)") + "\n" + call("search", query="tallest mountain Africa") + "\n"
            + call("python", code="print(3)"))
    for tok in (smol, hermes):
        sandbox = FakeSandbox()
        traj, _ = run(tok, [both, "\\boxed{4}"], spec(corpus, max_tool_calls=2, call_trigger="turn_end"),
                           sandbox=sandbox)
        assert [c.tool for c in traj.calls] == ["python", "search"] and sandbox.runs == [("print(2 + 2)\n", None)]
        assert [s.reason for s in traj.skipped_calls] == ["over_budget"]
        assert "Kilimanjaro" in traj.calls[1].observation
        assert traj.calls[0].token_end == traj.calls[1].token_start  # back to back, one span each
        # the model's own EOS closed its turn: it is kept (mask 1) and not appended again
        eos_at = traj.calls[0].token_start - 1
        assert traj.completion_ids[eos_at] == tok.eos_token_id and traj.loss_mask[eos_at] == 1
        assert trajectory_problems(traj.to_dict(), lambda ids, t=tok: t.decode(ids, skip_special_tokens=True)) == []


def test_calls_after_the_budget_or_in_the_final_turn_are_skipped(smol):
    traj, _ = run(smol, [call("python", code="print(5)"), "\\boxed{5} " + call("python", code="print(6)")],
                  spec(max_tool_calls=1))
    assert len(traj.calls) == 1 and [s.reason for s in traj.skipped_calls] == ["over_budget"]
    traj, _ = run(smol, ["\\boxed{5} " + call("python", code="print(6)")], spec(max_tool_calls=0))
    assert not traj.calls and traj.loss_mask == [1] * len(traj.loss_mask)


def test_oversized_outputs_are_capped_and_per_tool_budget(smol):
    traj, _ = run(smol, [call("python", code="print('x' * 5000)"), call("python", code="print(1)"), "\\boxed{1}"],
                  spec(max_tool_calls=2, max_observation_chars=200, max_calls_per_tool={"python": 1}))
    assert len(traj.calls[0].observation) < 300 and "cut" in traj.calls[0].observation
    assert traj.calls[1].error == "budget" and "budget of 1" in traj.calls[1].observation


def test_sandbox_failure_is_ours_never_the_models(smol):
    traj, _ = run(smol, [call("python", code="print(1)"), "\\boxed{1}"], spec(), sandbox=FakeSandbox(fail_next=2))
    assert traj.sandbox_error and traj.finish_reason == "sandbox_error" and traj.tool_tokens == 0


def test_user_registered_tools_sync_async_timeout_and_cap(smol):
    def lookup(word: str) -> str:
        """Define a word."""
        if word == "boom":
            raise ToolError("no such word")
        return "y" * 500 if word == "long" else {"pi": "3.14159"}.get(word, "?")

    async def slow(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "woke"

    schema = {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]}
    register_tool(FunctionTool("lookup_t", lookup, parameters=schema, max_output_chars=64), overwrite=True)
    register_tool(FunctionTool("slow_t", slow, parameters={"type": "object", "properties": {"seconds": {"type": "number"}},
                                                            "required": ["seconds"]}, timeout_s=0.2), overwrite=True)
    turns = [call("lookup_t", word="pi"), call("lookup_t", word="boom"), call("lookup_t", word="long"),
             call("slow_t", seconds=0.01), call("slow_t", seconds=5), call("lookup_t", word=3), "\\boxed{3.14}"]
    task = spec(tools=("lookup_t", "slow_t"), max_tool_calls=6)
    assert task.toolset()["lookup_t"].description == "Define a word."
    traj, prompt = run(smol, turns, task, sandbox=None)
    assert "lookup_t" in smol.decode(prompt)  # shown to the model in the system message
    obs = [c.observation for c in traj.calls]
    assert obs[0] == "3.14159" and "no such word" in obs[1] and "characters cut" in obs[2] and len(obs[2]) < 100
    assert obs[3] == "woke" and "timed out" in obs[4] and "must be of type string" in obs[5]
    assert [c.error for c in traj.calls] == [None, "bad_arguments", None, None, "timeout", "bad_arguments"]
    assert traj.calls[2].result.status.value == "output_limit"


def test_search_over_a_written_corpus(corpus):
    tool = build_toolset(["search"], search_corpus=corpus)["search"]
    hits = tool.search("how deep is the deepest lake")
    assert hits[0][0]["id"] == "d2" and all(score > 0 for _, score in hits)
    assert tool.search("the of and") == []
    with pytest.raises(ValueError, match="needs a corpus"):
        build_toolset(["search"])


def test_task_spec_validates_and_round_trips(tmp_path, corpus):
    task = spec(corpus, max_calls_per_tool={"search": 2}, error_marker=True)
    assert task.call_trigger == "call_end"
    assert TaskSpec.load(task.save(tmp_path).parent) == task
    with pytest.raises(ValueError, match="text template"):
        TaskSpec(protocol="tool_calls")
    with pytest.raises(ValueError, match="unknown tool 'nope'"):
        spec(tools=("nope",))
    with pytest.raises(ValueError, match="call_trigger"):
        spec(call_trigger="block_close")
    assert TaskSpec().protocol == "code_blocks" and TaskSpec().rollout_config(temperature=0).toolset is None


def test_pieces_split_after_each_result_even_when_it_looks_like_template_text(smol, hermes):
    for tok in (smol, hermes):
        renderer = ToolTurnRenderer(tok, build_toolset(["python"]).schemas())
        pieces = renderer.observation_pieces(["tool", "", "user"], model_ended_turn=False)
        messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "ZQX"}]
        messages += [{"role": "tool", "content": r} for r in ("tool", "", "user")]
        full = renderer.render(messages, add_generation_prompt=True)
        assert "".join(pieces) == full[full.index("ZQX") + 3:]
        assert pieces[0].endswith("\ntool") and not pieces[1].endswith("tool")
        assert pieces[-1].endswith("<|im_start|>assistant\n") and "user" in pieces[2]


def test_error_marker_under_code_blocks_too():
    from torl.engines.scripted import ToyTokenizer
    from torl.tir.loop import RolloutConfig

    script = ["```python\n1/0\n```output", "```python\nprint(2)\n```output", "\\boxed{2}"]
    config = RolloutConfig(max_tool_calls=2, error_marker=True, max_observation_chars=256)
    traj = asyncio.run(rollout(ScriptedEngine(ToyTokenizer(), script), FakeSandbox(), [1, 2], config))
    assert traj.calls[0].observation.startswith("<error>\nTraceback") and traj.calls[0].observation.endswith("</error>")
    assert traj.calls[1].observation == "2"  # only failed calls are marked
