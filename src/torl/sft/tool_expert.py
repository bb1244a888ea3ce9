"""Expert tool-call trajectories (protocol tool_calls): the SFT cold start for a chat model.

The pattern is `torl.sft.expert`'s (the code that computes the answer, its real output, the
boxed answer) as a chat model writes it, the first worked example of ``chat_tools_fewshot``:

    <tool_call>
    {"name": "python", "arguments": {"code": "print(482 * 37)"}}
    </tool_call>            <- generation stops here; the tool message comes back (mask 0)
    The answer is \\boxed{17834}.<EOS>

The expert is a scripted policy: its two turns are replayed by `ScriptedEngine` through the real
TIR loop (`torl.tir.loop.rollout`) under the task spec, so the prompt (the tools' schemas
included), the model's tokens, the tool turn the chat template writes and the masks are exactly
what RL produces and trains on. The rows are the id form of `torl.sft.data` (a
`Trajectory.to_dict()` plus the question), trained as recorded, never re-tokenized. The expert
answers with the tool's real output; a row whose call failed, whose output is not the gold answer,
or that the response budget cut is dropped.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from torl.errors import UserError
from torl.sft.expert import expert_code
from torl.tir.tool_parsing import CALL_CLOSE, CALL_OPEN


def expert_call(code: str) -> str:
    """The expert's first turn: one hermes call of `python` (generation stops at its closing tag)."""
    return f"{CALL_OPEN}\n{json.dumps({'name': 'python', 'arguments': {'code': code.strip()}})}\n{CALL_CLOSE}"


def expert_answer(observation: str) -> str:
    """The expert's last turn, after the tool message (the engine ends it with EOS)."""
    return f"The answer is \\boxed{{{observation.strip()}}}."


async def tool_call_expert_rows(questions: list[dict], task, tokenizer, sandbox) -> tuple[list[dict], dict]:
    """Id-form rows for `questions` whose call ran and printed the gold answer; and counts."""
    from torl.engines.scripted import ScriptedEngine
    from torl.tir.loop import encode_prompt, rollout

    if "python" not in task.tools or task.max_tool_calls < 1:
        raise UserError("the tool-call expert calls python once: the task needs tools: [python] and max_tool_calls >= 1")
    known = [(q, code) for q in questions if (code := expert_code(q["problem"])) is not None]
    if not known:
        raise UserError("the expert knows none of these questions (it writes code for products and modular "
                        "powers: train_tasks [arithmetic] or [modexp])")
    # What the tool prints is the answer the expert writes: run each program once to learn it.
    outputs = await asyncio.gather(*(sandbox.run(code, timeout=task.exec_timeout_s, memory_mb=task.exec_memory_mb)
                                     for _, code in known))
    config = task.rollout_config(temperature=0.0, seed=0, logprobs=False)
    template = task.prompt_template()

    async def one(q: dict, code: str, printed: str):
        engine = ScriptedEngine(tokenizer, [expert_call(code), expert_answer(printed)])
        prompt = encode_prompt(template, q["problem"], tokenizer, config)
        return await rollout(engine, sandbox, prompt, config, metadata={"question_id": q["question_id"]})

    ran = [(q, code, out.stdout) for (q, code), out in zip(known, outputs, strict=True)
           if out.status.value == "ok" and out.stdout.strip() == q["gold"].strip()]
    trajectories = await asyncio.gather(*(one(q, code, printed) for q, code, printed in ran))
    rows, cut = [], 0
    for (q, _, _), traj in zip(ran, trajectories, strict=True):
        call = traj.calls[0] if len(traj.calls) == 1 else None
        if traj.truncated or call is None or call.error or call.observation.strip() != q["gold"].strip():
            cut += 1  # the budget cut it, or the second run differed: not a clean example
            continue
        rows.append({"question_id": q["question_id"], "problem": q["problem"], "gold": q["gold"], "correct": True,
                     "trajectory": traj.to_dict()})
    counts = {"questions": len(questions), "known": len(known), "written": len(rows),
              "dropped": len(known) - len(ran) + cut}
    return rows, counts


def write_tool_call_expert_data(questions: list[dict], out_path, sandbox_factory, task, tokenizer) -> dict:
    """Run the tool-call expert on `questions` with a sandbox from `sandbox_factory()`; write the rows as JSONL."""

    async def run() -> tuple[list[dict], dict]:
        sandbox = sandbox_factory()  # built on this loop: backends bind their pipes to the loop they start on
        try:
            return await tool_call_expert_rows(questions, task, tokenizer, sandbox)
        finally:
            await sandbox.aclose()

    rows, counts = asyncio.run(run())
    if not rows:
        raise UserError(f"the tool-call expert gave no clean example on {counts['known']} questions: is the sandbox "
                        "working (torl sandbox check), and max_response_tokens long enough for a call, its tool turn "
                        "and the answer?")
    Path(out_path).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return counts
