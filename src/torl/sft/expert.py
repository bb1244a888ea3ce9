"""Expert TIR data in one fixed pattern, as distilled TIR data is: the code, its real output, the answer.

For each question the expert writes one ```` ```python ```` block that computes the answer, the
sandbox runs it (a real run, like any tool call), and the response is

    ```python
    print(482 * 37)
    ```
    ```output
    17834
    ```
    The answer is \\boxed{17834}.

— the pattern of the first worked example in the ``torl_fewshot`` template. Rows are text-form
SFT data (``{"problem", "answer", "response"}``); a row whose output does not equal the gold answer
is dropped (it would teach a wrong answer). The expert knows the synthetic task kinds whose answer
is one line of Python (`expert_code`: products, modular powers, factorial quotients, binomials, and the
`mental` sums it also hands to the tool, as distilled data does: always code, one call).
"""

from __future__ import annotations

import asyncio
import re

from torl.errors import UserError

_PRODUCT = re.compile(r"^Compute \$(?P<expr>[0-9 +\-]+(?:\\times[0-9 +\-]+)+)\$\.$")
_MODEXP = re.compile(r"^What is the remainder when \$(\d+)\^\{(\d+)\}\$ is divided by \$(\d+)\$\?$")
_MENTAL = re.compile(r"^What is (\d+) ([+-]) (\d+)\?$")
_FACTORIAL = re.compile(r"^Compute \$\\frac\{(\d+)!\}\{(\d+)!\}\$\.$")
_BINOMIAL = re.compile(r"^Compute \$\\binom\{(\d+)\}\{(\d+)\}\$\.$")


def expert_code(problem: str) -> str | None:
    """The expert's one-line program for `problem`, or None when it does not know the kind."""
    if m := _PRODUCT.match(problem):
        return f"print({' '.join(m['expr'].replace(chr(92) + 'times', '*').split())})\n"
    if m := _MODEXP.match(problem):
        return f"print(pow({m[1]}, {m[2]}, {m[3]}))\n"
    if m := _MENTAL.match(problem):  # distilled TIR data calls the tool even where the head would do
        return f"print({m[1]} {m[2]} {m[3]})\n"
    if m := _FACTORIAL.match(problem):
        return f"import math\nprint(math.factorial({m[1]}) // math.factorial({m[2]}))\n"
    if m := _BINOMIAL.match(problem):
        return f"import math\nprint(math.comb({m[1]}, {m[2]}))\n"
    return None


def expert_response(code: str, observation: str) -> str:
    return f"```python\n{code}```\n```output\n{observation}\n```\nThe answer is \\boxed{{{observation}}}.\n"


async def expert_rows(questions: list[dict], sandbox, *, max_observation_chars: int = 512) -> tuple[list[dict], dict]:
    """Text-form rows for `questions` whose code ran and printed the gold answer; and counts."""
    from torl.sandbox.observation import format_observation

    known = [(q, code) for q in questions if (code := expert_code(q["problem"])) is not None]
    if not known:
        raise UserError("the expert knows none of these questions (it writes code for products, modular powers, "
                        "factorial quotients, binomials and small sums: train_tasks from arithmetic, modexp, factorial, "
                        "binomial, mental)")
    results = await asyncio.gather(*(sandbox.run(code) for _, code in known))
    rows, dropped = [], 0
    for (q, code), result in zip(known, results, strict=True):
        observation = format_observation(result, max_observation_chars).rstrip("\n")
        if result.status.value != "ok" or observation.strip() != q["gold"].strip():
            dropped += 1
            continue
        rows.append({"id": q["question_id"], "problem": q["problem"], "answer": q["gold"],
                     "response": expert_response(code, observation)})
    return rows, {"questions": len(questions), "known": len(known), "written": len(rows), "dropped": dropped}


def write_expert_data(questions: list[dict], out_path, sandbox_factory) -> dict:
    """Run the expert on `questions` with a sandbox from `sandbox_factory()` and write the rows as JSONL."""
    import json
    from pathlib import Path

    async def run() -> tuple[list[dict], dict]:
        sandbox = sandbox_factory()  # built on this loop: backends bind their pipes to the loop they start on
        try:
            return await expert_rows(questions, sandbox)
        finally:
            await sandbox.aclose()

    rows, counts = asyncio.run(run())
    if not rows:
        raise UserError(f"the expert's code gave no correct answer on {counts['known']} questions: is the sandbox "
                        "working? (torl sandbox check)")
    out = Path(out_path)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return counts
