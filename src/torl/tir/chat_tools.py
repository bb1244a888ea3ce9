"""Tool calls through a chat template: the tools' schemas in the prompt, the tool turns' tokens.

**Schemas.** A template with tool support renders them itself (``apply_chat_template(tools=...)``;
detected by rendering a conversation with and without a probe tool: a template that ignores
``tools`` renders both the same). For a template without (SmolLM2-135M-Instruct's, the plain
ChatML ones), torl puts the hermes rendering below in the system message: the tools as JSON lines
inside ``<tools></tools>``, and how to call one (``<tool_call>{"name": ..., "arguments": {...}}
</tool_call>``; results come back in a ``tool`` message).

**Tool turns, token-in/token-out.** The model's tokens are kept as sampled. After a turn with
calls, the loop appends (mask 0) what the template writes between the end of that assistant
message's content and the start of the next assistant message: the end-of-turn delimiter, one
``tool`` message per result, and the generation prompt. That text is the part of a rendering of
``[user, assistant(MARK), tool(r1), ..., tool(rn)]`` (generation prompt on) after MARK; it is
split per call after each result, and each piece is tokenized on its own. If the model ended its
turn with EOS (``call_trigger: turn_end``), its EOS already is the end-of-turn delimiter and only
the rest is appended.

**Prefix check.** That is exact only for a prefix-preserving template: rendering the whole
conversation up to a tool result must give exactly the prompt, the sampled tokens and the appended
tokens. `check_prefix_preserving` renders a two-call probe conversation both ways, token for token,
and refuses a template that differs (Qwen3-style templates that drop earlier reasoning, for one):
one line naming the template and the way out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from torl.errors import UserError
from torl.tir.tool_parsing import CALL_CLOSE, CALL_OPEN

MARK = "\u2063TORL_MARK\u2063"   # invisible separators around it: never merged into a template's neighbours
_PROBE_TOOL = {"type": "function", "function": {"name": "probe_tool", "description": "probe",
                                                 "parameters": {"type": "object", "properties": {}}}}


def tools_system_prompt(schemas: Sequence[dict]) -> str:
    """The hermes-style tool instructions for a template that cannot render `tools` itself."""
    listed = "\n".join(json.dumps(s, ensure_ascii=False) for s in schemas)
    return (
        "You can call tools to help you. The tools, as JSON schemas:\n"
        f"<tools>\n{listed}\n</tools>\n"
        "To call a tool, write\n"
        f'{CALL_OPEN}\n{{"name": <tool name>, "arguments": <arguments as a JSON object>}}\n{CALL_CLOSE}\n'
        "and stop; its result comes back in a message from the tool."
    )


def supports_tools(tokenizer) -> bool:
    """Whether the tokenizer's chat template renders `tools` (a template that ignores them renders the same)."""
    messages = [{"role": "user", "content": "hi"}]
    try:
        with_tools = tokenizer.apply_chat_template(messages, tools=[_PROBE_TOOL], tokenize=False,
                                                   add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - a template that fails on tools has no tool support
        return False
    return with_tools != tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def template_name(tokenizer) -> str:
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


class ToolTurnRenderer:
    """Renders the tool turns of one tokenizer's chat template (see the module docstring)."""

    def __init__(self, tokenizer, schemas: Sequence[dict]) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise UserError(f"{template_name(tokenizer)} has no chat template: protocol tool_calls needs a chat "
                            "model (or use protocol: code_blocks)")
        self.tokenizer, self.schemas = tokenizer, list(schemas)
        self.native = supports_tools(tokenizer)

    # -- the prompt
    def system_prompt(self, system: str | None) -> str | None:
        """The system message to send: the template's own (native tools) or with the tools rendered into it."""
        if self.native:
            return system
        return tools_system_prompt(self.schemas) + (f"\n\n{system}" if system else "")

    def render(self, messages: list[dict], *, add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, tools=self.schemas if self.native else None,
                                                  tokenize=False, add_generation_prompt=add_generation_prompt)

    # -- the tool turns
    def observation_pieces(self, results: Sequence[str], *, model_ended_turn: bool) -> list[str]:
        """The text appended after an assistant turn with these results, one piece per result (see module doc)."""
        # Markers stand in for the results, so a result that happens to equal template text cannot misplace a split.
        slots = [f"\u2063TORL_RESULT_{n}\u2063" for n in range(len(results))]
        messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": MARK}]
        messages += [{"role": "tool", "content": slot} for slot in slots]
        text = self.render(messages, add_generation_prompt=True)
        at = text.find(MARK)
        if at < 0:
            raise UserError(f"the chat template of {template_name(self.tokenizer)} does not render an assistant "
                            "message's content verbatim, so tool turns cannot be appended exactly; use a template "
                            "that does, or protocol: code_blocks")
        delta = text[at + len(MARK):]
        if model_ended_turn:
            delta = delta.removeprefix(self.tokenizer.decode([self.tokenizer.eos_token_id]))
        pieces, start = [], 0
        for n, (slot, result) in enumerate(zip(slots, results, strict=True)):
            found = delta.find(slot, start)
            if found < 0:
                raise UserError(f"the chat template of {template_name(self.tokenizer)} does not render tool results "
                                "verbatim; use a template that does, or protocol: code_blocks")
            after = found + len(slot)
            end = len(delta) if n == len(results) - 1 else after
            pieces.append(delta[start:found] + result + delta[after:end])
            start = end
        return pieces

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)


def check_prefix_preserving(renderer: ToolTurnRenderer, tool_name: str) -> None:
    """Refuse (UserError) a chat template under which appended tool turns would not equal a full rendering."""
    call = f'{CALL_OPEN}\n{{"name": "{tool_name}", "arguments": {{}}}}\n{CALL_CLOSE}'
    system = renderer.system_prompt(None)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": "What is 2+3?"}]
    ids = renderer.encode(renderer.render(messages, add_generation_prompt=True))
    for result in ("5", "7\nand more"):
        ids += renderer.encode(call)  # what the model would have sampled (its turn stopped at the call's end)
        for piece in renderer.observation_pieces([result], model_ended_turn=False):
            ids += renderer.encode(piece)
        messages += [{"role": "assistant", "content": call}, {"role": "tool", "content": result}]
        full = renderer.encode(renderer.render(messages, add_generation_prompt=True))
        if full != ids:
            first = next((i for i, (a, b) in enumerate(zip(full, ids)) if a != b), min(len(full), len(ids)))
            raise UserError(
                f"the chat template of {template_name(renderer.tokenizer)} is not prefix-preserving for tool calls "
                f"(a rendered conversation differs from the sampled tokens plus the appended tool turns at token "
                f"{first}): give the tokenizer a prefix-preserving chat_template, or use protocol: code_blocks")
