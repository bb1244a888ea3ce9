"""Prompt templates the output stage can bake into records (`prompt` field).

A tiny local copy: the full registry (few-shot and chat variants) lives in torl.tir.templates,
which sits above this package; the data stage only needs the ToRL base template by name.
`{question}` is substituted literally, so problems full of LaTeX braces need no escaping.
"""

from __future__ import annotations

from torl.data.records import DataError

TEMPLATES = {
    # ToRL's base-model template (GAIR-NLP/ToRL), exact text.
    "torl": (
        "A conversation between User and Assistant. The user asks a question, and the Assistant "
        "solves it.\nUser: Please integrate natural language reasoning with programs to solve the "
        "problem above, and put your final answer within \\boxed{}.\n{question}\nAssistant:\n"
    ),
}


def apply_template(name: str, question: str) -> str:
    """The prompt text for `question` under template `name`."""
    if name not in TEMPLATES:
        raise DataError(f"unknown prompt template {name!r}; known here: {sorted(TEMPLATES)}")
    return TEMPLATES[name].replace("{question}", question)


def with_prompts(records: list[dict], template: str | None) -> list[dict]:
    """Copies of `records` with a `prompt` field (None template: records unchanged)."""
    if template is None:
        return records
    return [{**r, "prompt": apply_template(template, r["problem"])} for r in records]
