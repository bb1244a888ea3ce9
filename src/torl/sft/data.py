"""SFT examples from tool-integrated trajectories: token ids and a loss mask, under the same contract as RL.

An example is `prompt_ids`, `completion_ids` and `loss_mask` (1 = the model wrote this token, 0 =
the interpreter did), the shape of a `Trajectory` (`torl.tir.trajectory`). Three kinds of row:

- **id form**: a trajectory with ``prompt_ids``, ``completion_ids`` and ``loss_mask``, at the top
  level or under ``"trajectory"``: a `Trajectory.to_dict()` (`torl rollout --json`, `torl data
  sample`), a sample dump written with ``dump_sample_ids``, an eval row of ``torl eval --save-ids``.
  Trained exactly as recorded, never re-tokenized; where the row has segments too, the ids win.
- **segment form**: a compact trajectory (training sample dumps ``RUN_DIR/samples/*.jsonl``, eval
  ``trajectories.jsonl``, written without their ids): no token lists, but its ``segments`` say which
  text the model wrote and which the interpreter did. The prompt (the row's ``prompt``, else the
  template's rendering of ``problem``) and each segment are tokenized on their own, which gives the
  sampled tokens back only where the sampler's tokenization was the canonical one.
- **text form**: ``{"problem", "answer", "response"}``, the response holding ```` ```python ````
  blocks and their ```` ```output ```` blocks (ToRA / Qwen-Math-TIR style). The response is cut
  into model and interpreter segments exactly where the TIR loop would have appended the
  observation under the task's ``call_trigger`` (README "Which side of the fences is masked"), then
  tokenized segment by segment like the segment form.

Whatever the form, the example is checked with the RL token contract's own check
(`torl.train.update.contract.trajectory_problems`: the mask is 0 exactly on the interpreter spans, which
decode to the interpreter's text); an id-form row's lists must also have the lengths its compact
fields (``prompt_tokens``, ``completion_tokens``) record. A bad row is one `SftDataError` line naming
``file:line`` and the fix.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from torl.errors import UserError
from torl.tir.loop import BLOCK_CLOSE, OUTPUT_FENCE
from torl.tir.parsing import complete_python_blocks
from torl.tir.task import TaskSpec
from torl.tir.trajectory import ID_LISTS
from torl.train.update.contract import trajectory_problems

FENCE_LINE = "\n```"  # the line that closes an ```output block


class SftDataError(UserError):
    """SFT data the trainer cannot use as is: one line naming the file, the row and what to fix."""


@dataclasses.dataclass
class SftExample:
    prompt_ids: list[int]
    completion_ids: list[int]
    loss_mask: list[int]
    form: str              # "ids" | "segments" | "text"
    question_id: str | None = None

    def features(self) -> dict:
        """The pre-tokenized row TRL's SFTTrainer takes: `completion_mask` 0 on the prompt and every
        interpreter token (TRL turns it into labels -100 with `completion_only_loss`)."""
        return {"input_ids": self.prompt_ids + self.completion_ids,
                "completion_mask": [0] * len(self.prompt_ids) + list(self.loss_mask)}


@dataclasses.dataclass
class LoadReport:
    rows: int = 0
    used: int = 0
    skipped_incorrect: int = 0
    skipped_sandbox_error: int = 0
    forms: dict = dataclasses.field(default_factory=dict)
    model_tokens: int = 0
    tool_tokens: int = 0
    prompt_tokens: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def split_response(response: str, call_trigger: str) -> list[dict]:
    """`response` as alternating {"kind": "model"|"tool", "text"} segments, cut where the TIR loop appends.

    Under ``output_fence`` the model writes ```` ```output ```` itself and the interpreter the rest of
    the block (``"\\n<obs>\\n```\\n"``); under ``block_close`` the interpreter writes the whole block
    after the model's closing ```` ``` ```` line, unless the model wrote ```` ```output ```` on that
    line itself. Raises ValueError for an ```output block that never closes or follows no
    ```python block.
    """
    segments: list[dict] = []
    at = 0
    model_start = 0
    while (fence := response.find(OUTPUT_FENCE, at)) >= 0:
        model_text_so_far = response[model_start:fence]
        if not complete_python_blocks(model_text_so_far + OUTPUT_FENCE):
            raise ValueError(f"an ```output block at character {fence} follows no complete ```python block")
        after_close = call_trigger == "block_close" and response[:fence].endswith(BLOCK_CLOSE)
        tool_start = fence if after_close else fence + len(OUTPUT_FENCE)
        close = response.find(FENCE_LINE, fence + len(OUTPUT_FENCE))
        if close < 0:
            raise ValueError(f"the ```output block at character {fence} is never closed (no closing ``` line)")
        tool_end = close + len(FENCE_LINE)
        if response.startswith("\n", tool_end):
            tool_end += 1  # the loop appends "\n```\n": the newline after the fence is the interpreter's
        if tool_start > model_start:
            segments.append({"kind": "model", "text": response[model_start:tool_start]})
        segments.append({"kind": "tool", "text": response[tool_start:tool_end]})
        at = model_start = tool_end
    if model_start < len(response):
        segments.append({"kind": "model", "text": response[model_start:]})
    return segments


def tokenize_segments(prompt_ids: list[int], segments: list[dict], tokenizer, *, eos: bool) -> dict:
    """A trajectory-shaped dict from segments, each tokenized on its own (as the loop tokenizes observations)."""
    ids: list[int] = []
    mask: list[int] = []
    calls = []
    for seg in segments:
        piece = list(tokenizer(seg["text"], add_special_tokens=False).input_ids)
        start = len(ids)
        ids += piece
        mask += [1 if seg["kind"] == "model" else 0] * len(piece)
        if seg["kind"] == "tool":
            calls.append({"executed": True, "token_start": start, "token_end": len(ids)})
    if eos and tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
        ids.append(tokenizer.eos_token_id)
        mask.append(1)  # ending the answer is the model's decision, as the EOS it samples in RL
    return {"prompt_ids": list(prompt_ids), "completion_ids": ids, "loss_mask": mask, "calls": calls,
            "segments": [dict(s) for s in segments]}


def text_example(problem: str, response: str, task: TaskSpec, tokenizer, *, eos: bool = True) -> dict:
    """The trajectory-shaped dict of a text-form row (raises ValueError for a malformed response)."""
    prompt_ids = task.prompt_template().encode(problem, tokenizer)
    return tokenize_segments(prompt_ids, split_response(response, task.call_trigger), tokenizer, eos=eos)


def load_examples(paths: list[str], task: TaskSpec, tokenizer, *, only_correct: bool = True,
                  eos: bool = True) -> tuple[list[SftExample], LoadReport]:
    """Every usable example in `paths` (JSONL), checked; the first bad row raises `SftDataError`."""
    report = LoadReport()
    examples: list[SftExample] = []
    for path in paths:
        for line, row in _read_jsonl(path):
            report.rows += 1
            where = f"{path}:{line}"
            traj, form = _trajectory_of(row, where, task, tokenizer, eos)
            if traj is None:
                if form == "incorrect":
                    report.skipped_incorrect += 1
                elif form == "sandbox_error":
                    report.skipped_sandbox_error += 1
                continue
            if only_correct and _is_wrong(row):
                report.skipped_incorrect += 1
                continue
            problems = trajectory_problems(traj, lambda ids: tokenizer.decode(ids, skip_special_tokens=True))
            if problems:
                raise SftDataError(f"{where}: breaks the token contract: {problems[0]}")
            if not any(traj["loss_mask"]):
                raise SftDataError(f"{where}: no model tokens to learn from (empty response)")
            ex = SftExample(list(traj["prompt_ids"]), list(traj["completion_ids"]), list(traj["loss_mask"]), form,
                            _question_id(row))
            examples.append(ex)
            report.used += 1
            report.forms[form] = report.forms.get(form, 0) + 1
            report.model_tokens += sum(ex.loss_mask)
            report.tool_tokens += len(ex.loss_mask) - sum(ex.loss_mask)
            report.prompt_tokens += len(ex.prompt_ids)
    if not examples:
        raise SftDataError(f"no usable SFT examples in {', '.join(paths)} ({report.rows} rows, "
                           f"{report.skipped_incorrect} wrong answers skipped, "
                           f"{report.skipped_sandbox_error} sandbox errors skipped)")
    return examples, report


def _read_jsonl(path: str) -> list[tuple[int, dict]]:
    """(line number, object) per non-blank line."""
    p = Path(path)
    if not p.is_file():
        raise SftDataError(f"SFT data file not found: {path}")
    rows = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise SftDataError(f"{path} line {i}: not JSON ({e.msg}); SFT data is one JSON object per line") from None
        if not isinstance(row, dict):
            raise SftDataError(f"{path} line {i}: a JSON object is expected, got {type(row).__name__}")
        rows.append((i, row))
    if not rows:
        raise SftDataError(f"{path} is empty: SFT data is one JSON object per line (text form "
                           '{"problem", "answer", "response"}, or trajectories)')
    return rows


def _trajectory_of(row: dict, where: str, task: TaskSpec, tokenizer, eos: bool) -> tuple[dict | None, str]:
    """(trajectory-shaped dict, form); (None, reason) for a row that is skipped, not wrong."""
    nested = row.get("trajectory") if isinstance(row.get("trajectory"), dict) else None
    traj = next((t for t in (row, nested) if t is not None and any(k in t for k in ID_LISTS)), None)
    if traj is not None:  # id form: exactly as recorded (segments, if any, are not re-tokenized)
        if traj.get("sandbox_error"):
            return None, "sandbox_error"
        _check_id_lists(traj, where)
        return traj, "ids"
    if task.protocol == "tool_calls":  # decoded text has lost the template's special tokens: no exact re-tokenizing
        raise SftDataError(f"{where}: protocol tool_calls takes trajectories with their token ids only (torl rollout "
                           "--json, torl data sample's rows, the tool-call expert); text and segment rows cannot be "
                           "re-tokenized exactly through a chat template")
    if nested is not None and "segments" in nested:  # segment form: a compact dump row
        if nested.get("sandbox_error"):
            return None, "sandbox_error"
        prompt = row.get("prompt")
        try:
            prompt_ids = (list(tokenizer(prompt, add_special_tokens=task.prompt_template().kind == "text").input_ids)
                          if isinstance(prompt, str) else task.prompt_template().encode(_field(row, "problem", where),
                                                                                         tokenizer))
        except ValueError as e:
            raise SftDataError(f"{where}: {e}") from None
        segments = [s for s in nested["segments"] if s.get("text")]
        # "stop": the response ended on the model's EOS (or a stop string, whose text it wrote).
        return tokenize_segments(prompt_ids, segments, tokenizer,
                                 eos=eos and nested.get("finish_reason") == "stop"), "segments"
    problem = _field(row, "problem", where)
    _field(row, "answer", where)
    response = _field(row, "response", where)
    try:
        traj = text_example(problem, response, task, tokenizer, eos=eos)
    except ValueError as e:
        raise SftDataError(f"{where}: response: {e}") from None
    if len(traj["calls"]) > task.max_tool_calls:
        raise SftDataError(f"{where}: {len(traj['calls'])} ```output blocks, but the task allows "
                           f"max_tool_calls={task.max_tool_calls} (C); raise max_tool_calls or drop the row")
    return traj, "text"


def _check_id_lists(traj: dict, where: str) -> None:
    """The three lists are there, hold integers, and have the lengths the row's compact fields record.

    (Mask against ids and against the tool spans is the token contract's check, after this.)"""
    for key in ID_LISTS:
        value = traj.get(key)
        if not isinstance(value, list):
            raise SftDataError(f"{where}: an id-form row needs the list {key!r} beside the others "
                               f"({', '.join(ID_LISTS)}); re-record it or drop the partial lists")
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in value):
            raise SftDataError(f"{where}: {key} holds values that are not integer token ids")
    for key, count in (("prompt_ids", "prompt_tokens"), ("completion_ids", "completion_tokens")):
        recorded = traj.get(count)
        if isinstance(recorded, int) and recorded != len(traj[key]):
            raise SftDataError(f"{where}: {key} has {len(traj[key])} ids but the row records {count}={recorded}; "
                               "the lists were cut or edited: re-record the row")


def _field(row: dict, name: str, where: str) -> str:
    value = row.get(name)
    if value is None:
        raise SftDataError(f'{where}: no {name!r}; text-form rows are {{"problem", "answer", "response"}}')
    if not isinstance(value, str):
        value = str(value)
    return value


def _is_wrong(row: dict) -> bool:
    """A row that says its answer was wrong (dumps and eval rows carry `correct`; rollout --json a reward)."""
    if row.get("correct") is False:
        return True
    reward = row.get("reward")
    return isinstance(reward, dict) and reward.get("correct") is False


def _question_id(row: dict) -> str | None:
    qid = row.get("question_id") or row.get("id") or (row.get("metadata") or {}).get("question_id")
    return None if qid is None else str(qid)
