"""Prompt templates, by name. Users add their own with `register_template` or from a config dict.

Built-ins:

- ``torl``: ToRL's base-model template (GAIR-NLP/ToRL ``tir_base_0309``), exact text.
- ``torl_think``: ToRL's earlier variant (``tir_base_0307``, exact text) that adds "The
  assistant first thinks about the reasoning process in the mind ...".
- ``torl_fewshot``: ToRL's protocol (```` ```python ```` blocks, ```` ```output ```` results,
  ``\\boxed{}`` answers) taught by two short worked examples, the first solved with a Python call and
  the second without, so the model sees both options. A model as small as SmolLM2-135M almost
  never writes code or boxes an answer from the bare ``torl`` template; with these examples its
  samples do both some of the time, which gives GRPO signal. Kept short (about 140 tokens with a
  question) because every prompt token is paid for by every sample, in generation and in the update.
- ``chat``: the tokenizer's chat template (``apply_chat_template(add_generation_prompt=True)``)
  around a TIR instruction, for instruct models.
- ``chat_tools``: for protocol ``tool_calls``: the chat template with the tools (native, or in the
  system message: `torl.tir.chat_tools`) and an instruction to call them and box the answer. A chat
  template's examples may call tools: each ``</tool_call>`` in a solution is answered by the next
  of the example's ``tool_results`` as a ``tool`` message.
- ``chat_tools_fewshot``: ``torl_fewshot``'s two worked examples as chat turns for protocol
  ``tool_calls`` (the first calls ``python`` by tool call and reads its result), for models as
  small as SmolLM2-135M.

A template renders ``preamble`` once, then each few-shot example as ``turn`` (with the example's
question) + its solution + ``separator``, then ``turn`` with the real question. ``{question}`` is
substituted literally (no ``str.format``, so ``\\boxed{}`` needs no escaping).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

TOOL_INSTRUCTION = (
    "Please integrate natural language reasoning with programs to solve the problem above, "
    "and put your final answer within \\boxed{}."
)
TOOL_CALL_INSTRUCTION = "Call a tool when it helps, and put your final answer within \\boxed{}."
_TORL_PREAMBLE = "A conversation between User and Assistant. The user asks a question, and the Assistant solves it."
_TORL_TURN = "User: " + TOOL_INSTRUCTION + "\n{question}\nAssistant:\n"


@dataclasses.dataclass(frozen=True)
class FewShotExample:
    question: str
    solution: str  # what the assistant wrote, tool outputs included, ending with the boxed answer
    # protocol tool_calls: the result of each </tool_call> in `solution`, sent back as a tool message
    tool_results: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
    name: str
    turn: str                        # text (kind "text") or user message (kind "chat") with {question}
    preamble: str = ""               # text kinds: rendered once before everything
    kind: str = "text"               # "text" | "chat"
    examples: tuple[FewShotExample, ...] = ()
    separator: str = "\n"            # text kinds: after each example's solution
    system: str | None = None        # chat kind: system message (None = the tokenizer's default)
    stop: tuple[str, ...] = ()       # strings that end the answer (few-shot: the next "User:" turn)

    def __post_init__(self):
        if "{question}" not in self.turn:
            raise ValueError(f"template {self.name!r}: its turn text must contain {{question}}")
        if self.kind not in ("text", "chat"):
            raise ValueError(f"template {self.name!r}: kind must be 'text' or 'chat', not {self.kind!r}")

    def render(self, question: str, tokenizer=None, *, tool_renderer=None) -> str:
        """The prompt as text. Chat templates need the tokenizer (its chat template renders it);
        `tool_renderer` (protocol tool_calls, a `torl.tir.chat_tools.ToolTurnRenderer`) adds the tools."""
        if tool_renderer is not None:
            if self.kind != "chat":
                raise ValueError(f"template {self.name!r} is a text template; protocol tool_calls needs a chat "
                                 "template (e.g. chat_tools)")
            return tool_renderer.render(self._tool_messages(question, tool_renderer), add_generation_prompt=True)
        if self.kind == "text":
            shots = "".join(self._fill(ex.question) + ex.solution + self.separator for ex in self.examples)
            return self.preamble + shots + self._fill(question)
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"template {self.name!r} needs a tokenizer with a chat template; use --template torl for base models")
        messages = [{"role": "system", "content": self.system}] if self.system is not None else []
        for ex in self.examples:
            messages += [{"role": "user", "content": self._fill(ex.question)}, {"role": "assistant", "content": ex.solution}]
        messages.append({"role": "user", "content": self._fill(question)})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode(self, question: str, tokenizer, *, tool_renderer=None) -> list[int]:
        """Prompt token ids. Chat renderings already carry their special tokens; text ones get the
        tokenizer's usual ones (e.g. a BOS for Llama-style bases)."""
        text = self.render(question, tokenizer, tool_renderer=tool_renderer)
        return list(tokenizer(text, add_special_tokens=self.kind == "text").input_ids)

    def _tool_messages(self, question: str, renderer) -> list[dict]:
        system = renderer.system_prompt(self.system)
        messages = [{"role": "system", "content": system}] if system else []
        for ex in self.examples:
            messages.append({"role": "user", "content": self._fill(ex.question)})
            parts = ex.solution.split("</tool_call>")
            if len(parts) - 1 != len(ex.tool_results):
                raise ValueError(f"template {self.name!r}: an example has {len(parts) - 1} tool calls and "
                                 f"{len(ex.tool_results)} tool_results")
            for part, result in zip(parts, ex.tool_results, strict=False):
                messages += [{"role": "assistant", "content": part + "</tool_call>"}, {"role": "tool", "content": result}]
            messages.append({"role": "assistant", "content": parts[-1]})
        messages.append({"role": "user", "content": self._fill(question)})
        return messages

    def _fill(self, question: str) -> str:
        return self.turn.replace("{question}", question)


_FEWSHOT = (
    FewShotExample(
        question="What is 482 * 37?",
        solution="```python\nprint(482 * 37)\n```\n```output\n17834\n```\nThe answer is \\boxed{17834}.\n",
    ),
    FewShotExample(
        question="What is 15 + 27?",
        solution="15 + 27 = 42. The answer is \\boxed{42}.\n",
    ),
)
_FEWSHOT_PREAMBLE = (
    "A conversation between User and Assistant. The Assistant can run Python code and puts the final answer in \\boxed{}.\n"
)

# The same two worked examples for protocol tool_calls: one calls python by tool call, one does not.
_TOOL_FEWSHOT = (
    FewShotExample(
        question="What is 482 * 37?",
        solution='<tool_call>\n{"name": "python", "arguments": {"code": "print(482 * 37)"}}\n</tool_call>'
                 "The answer is \\boxed{17834}.",
        tool_results=("17834",),
    ),
    FewShotExample(question="What is 15 + 27?", solution="15 + 27 = 42. The answer is \\boxed{42}."),
)

_REGISTRY: dict[str, PromptTemplate] = {}


def register_template(template: PromptTemplate, *, overwrite: bool = False) -> PromptTemplate:
    """Add a template under its name; refuses to replace one unless `overwrite`."""
    if template.name in _REGISTRY and not overwrite:
        raise ValueError(f"prompt template {template.name!r} already exists; pick another name or pass overwrite=True")
    _REGISTRY[template.name] = template
    return template


def get_template(name: str) -> PromptTemplate:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown prompt template {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def template_names() -> list[str]:
    return sorted(_REGISTRY)


def template_from_config(cfg: Mapping, *, register: bool = True) -> PromptTemplate:
    """Build (and, unless `register` is false, register) a template from a config mapping, e.g. a YAML
    recipe's `template:` section: ``{name, turn, preamble?, kind?, separator?, system?, stop?,
    examples?: [{question, solution}]}``."""
    cfg = dict(cfg)
    unknown = set(cfg) - {f.name for f in dataclasses.fields(PromptTemplate)}
    if unknown or "name" not in cfg or "turn" not in cfg:
        raise ValueError(f"template config needs 'name' and 'turn' (got unknown keys {sorted(unknown)})")
    examples: Sequence = cfg.pop("examples", ()) or ()
    cfg["stop"] = tuple(cfg.get("stop", ()))
    shots = tuple(FewShotExample(**{**ex, "tool_results": tuple(ex.get("tool_results", ()))}) for ex in examples)
    template = PromptTemplate(**cfg, examples=shots)
    return register_template(template, overwrite=True) if register else template


register_template(PromptTemplate("torl", preamble=_TORL_PREAMBLE + "\n", turn=_TORL_TURN))
register_template(
    PromptTemplate(
        "torl_think",
        preamble=_TORL_PREAMBLE + " The assistant first thinks about the reasoning process in the mind "
        "and then provides the user with the answer. ",
        turn=_TORL_TURN,
    )
)
register_template(
    PromptTemplate("torl_fewshot", preamble=_FEWSHOT_PREAMBLE, turn="User: {question}\nAssistant:\n", examples=_FEWSHOT,
                   stop=("\nUser:",))
)
register_template(PromptTemplate("chat", kind="chat", turn="{question}\n\n" + TOOL_INSTRUCTION))
register_template(PromptTemplate("chat_tools", kind="chat", turn="{question}\n\n" + TOOL_CALL_INSTRUCTION))
register_template(PromptTemplate("chat_tools_fewshot", kind="chat", turn="{question}", examples=_TOOL_FEWSHOT))
