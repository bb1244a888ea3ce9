"""Prompt templates and code-block parsing."""

from types import SimpleNamespace

import pytest

from torl.tir.parsing import complete_python_blocks
from torl.tir.templates import (
    PromptTemplate,
    get_template,
    register_template,
    template_from_config,
)

TORL_EXACT = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it.\n"
    "User: Please integrate natural language reasoning with programs to solve the problem above, and put your "
    "final answer within \\boxed{}.\nWhat is 1+1?\nAssistant:\n"
)


def test_torl_template_is_torl_exact_text():
    assert get_template("torl").render("What is 1+1?") == TORL_EXACT


def test_torl_think_is_the_0307_variant():
    text = get_template("torl_think").render("Q?")
    assert text.startswith(
        "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
        "The assistant first thinks about the reasoning process in the mind and then provides the user with the answer. "
        "User: Please integrate"
    )
    assert text.endswith("\nQ?\nAssistant:\n")


def test_fewshot_has_one_example_with_code_and_one_without_then_the_question():
    text = get_template("torl_fewshot").render("What is 3*4?")
    assert text.count("```python") == 1 and text.count("```output") == 1 and text.count("\\boxed{") == 3
    assert text.endswith("What is 3*4?\nAssistant:\n")
    assert text.index("482 * 37") < text.index("15 + 27") < text.index("What is 3*4?")


def test_chat_template_uses_the_tokenizer_and_requires_one():
    seen = {}

    def apply_chat_template(messages, tokenize, add_generation_prompt):
        seen.update(messages=messages, add_generation_prompt=add_generation_prompt)
        return "RENDERED"

    tok = SimpleNamespace(chat_template="x", apply_chat_template=apply_chat_template)
    assert get_template("chat").render("Q?", tok) == "RENDERED"
    assert seen["add_generation_prompt"] and seen["messages"][-1]["content"].startswith("Q?\n\nPlease integrate")
    with pytest.raises(ValueError, match="chat template"):
        get_template("chat").render("Q?")


def test_user_templates_from_config_and_errors():
    t = template_from_config({"name": "mine", "turn": "Q: {question}\nA:", "examples": [{"question": "1+1", "solution": " 2"}]})
    assert get_template("mine") is t and t.render("2+2") == "Q: 1+1\nA: 2\nQ: 2+2\nA:"
    with pytest.raises(ValueError, match="already exists"):
        register_template(PromptTemplate("torl", turn="{question}"))
    with pytest.raises(ValueError, match="must contain"):
        PromptTemplate("bad", turn="no placeholder")
    with pytest.raises(ValueError, match="unknown prompt template 'nope'"):
        get_template("nope")
    with pytest.raises(ValueError, match="needs 'name' and 'turn'"):
        template_from_config({"name": "x", "text": "{question}"})


@pytest.mark.parametrize(
    "text, blocks",
    [
        ("```python\nprint(1)\n```\n", ["print(1)\n"]),
        ("a\n```python\nx = 1\n```\nb\n```python\nprint(x)\n```output", ["x = 1\n", "print(x)\n"]),
        ("```python\nprint(1)", []),                      # never closed
        ("```python\nprint(1)```output", []),             # fence not on its own line
        ("Now: ```python\n  y = 2\n  print(y)\n```", ["  y = 2\n  print(y)\n"]),
        ("```\nnot python\n```", []),
        ("```python\nbroken\n```python\nprint(2)\n```", ["print(2)\n"]),
    ],
)
def test_complete_python_blocks(text, blocks):
    assert complete_python_blocks(text) == blocks
