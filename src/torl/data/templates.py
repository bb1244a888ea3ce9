"""Prompts the output stage can bake into records (`prompt` field), from `torl.tir.templates`.

The templates are the ones training renders (one registry, so a baked prompt is exactly what the
trainer would have built). Only text templates can be baked: a chat template needs the model's
tokenizer, which the data stage does not have.
"""

from __future__ import annotations

from torl.data.records import DataError


def apply_template(name: str, question: str) -> str:
    """The prompt text for `question` under the text template `name`."""
    # Imported here: torl.tir costs ~0.1 s, which `torl data` stages that bake no prompt need not pay.
    from torl.tir.templates import get_template

    try:
        template = get_template(name)
    except ValueError as e:
        raise DataError(str(e)) from None
    if template.kind != "text":
        raise DataError(f"template {name!r} is a chat template and needs the model's tokenizer; "
                        "leave `prompt` to the trainer (no --template) or pick a text template")
    return template.render(question)


def with_prompts(records: list[dict], template: str | None) -> list[dict]:
    """Copies of `records` with a `prompt` field (None template: records unchanged)."""
    if template is None:
        return records
    return [{**r, "prompt": apply_template(template, r["problem"])} for r in records]
