"""The token contract, checked on every generation batch: TRL trains exactly what was sampled, plus
the observation tokens, with the loss mask the trajectory recorded.

For each sample, between its `Trajectory` (the rollout's record, `torl.tir.trajectory`) and the
tensors TRL built from what `rollout_func` returned:

- the trajectory is self-consistent: ids, loss mask and logprobs have one length; the loss mask is
  0 exactly on the spans `[token_start, token_end)` of its executed tool calls (in order, inside the
  completion) and 1 elsewhere; each span decodes to the matching "tool" segment's text; interpreter
  tokens carry logprob 0.0; `model_tokens`/`tool_tokens` count the mask.
- TRL's prompt ids (left padding removed) equal the trajectory's prompt ids; its completion ids
  equal the trajectory's, token for token, followed only by padding (no re-tokenization drift); its
  completion mask covers exactly those tokens; its `tool_mask` (our `env_mask`) equals the loss
  mask — all 0 for a response `filter_void_turns` took out of the loss; and its sampling logprobs
  equal the trajectory's.
  With TRL's `mask_truncated_completions`, a truncated response's masks are all 0, as TRL makes them.

A violation raises `TokenContractViolation` naming the sample and what differs; the offending
sample (trajectory and TRL's rows) is written as JSON when a path is given.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from torl.errors import TokenContractViolation


def trajectory_problems(traj: dict, decode) -> list[str]:
    """What is inconsistent inside one trajectory dict (empty: nothing)."""
    ids, mask, logprobs = traj["completion_ids"], traj["loss_mask"], traj.get("logprobs")
    problems = []
    if len(mask) != len(ids):
        problems.append(f"loss_mask has {len(mask)} entries for {len(ids)} completion tokens")
    if logprobs is not None and len(logprobs) != len(ids):
        problems.append(f"logprobs has {len(logprobs)} entries for {len(ids)} completion tokens")
    if any(m not in (0, 1) for m in mask):
        problems.append("loss_mask holds values other than 0 and 1")
    if problems:
        return problems
    expected = [1] * len(ids)
    at = 0
    executed = [c for c in traj.get("calls", []) if c.get("executed", True)]
    for n, call in enumerate(executed):
        start, end = call["token_start"], call["token_end"]
        if not at <= start <= end <= len(ids):
            problems.append(f"call {n}: span [{start}, {end}) is out of order or outside the {len(ids)} tokens")
            return problems
        expected[start:end] = [0] * (end - start)
        at = end
    if mask != expected:
        first = next(i for i, (a, b) in enumerate(zip(mask, expected, strict=True)) if a != b)
        problems.append(f"loss_mask differs from the executed calls' observation spans first at token {first} "
                        f"(mask {mask[first]}, spans say {expected[first]})")
    tool_texts = [s["text"] for s in traj.get("segments", []) if s.get("kind") == "tool"]
    span_texts = [decode(ids[c["token_start"]:c["token_end"]]) for c in executed]
    if tool_texts != span_texts:
        problems.append(f"the {len(tool_texts)} tool segments do not decode from the {len(span_texts)} observation "
                        f"spans (segments {tool_texts!r:.200}, spans {span_texts!r:.200})")
    if logprobs is not None and any(lp != 0.0 for lp, m in zip(logprobs, mask, strict=True) if m == 0):
        problems.append("an interpreter token has a nonzero sampling logprob")
    model = sum(mask)
    if traj.get("model_tokens", model) != model or traj.get("tool_tokens", len(mask) - model) != len(mask) - model:
        problems.append(f"model_tokens/tool_tokens ({traj.get('model_tokens')}/{traj.get('tool_tokens')}) do not "
                        f"count the loss mask ({model}/{len(mask) - model})")
    return problems


def batch_row_problems(traj: dict, row: dict, *, filtered: bool, truncated_masked: bool) -> list[str]:
    """What differs between a trajectory and TRL's tensors for its row (1-D tensors, padding included)."""
    problems = []
    prompt = row["prompt_ids"][row["prompt_mask"].bool()].tolist()
    if prompt != list(traj["prompt_ids"]):
        problems.append(f"TRL's prompt ({len(prompt)} tokens) is not the trajectory's ({len(traj['prompt_ids'])})")
    ids = list(traj["completion_ids"])
    n = len(ids)
    trl_ids = row["completion_ids"]
    if trl_ids.numel() < n or trl_ids[:n].tolist() != ids:
        got = trl_ids[:n].tolist()
        first = next((i for i, (a, b) in enumerate(zip(got, ids)) if a != b), min(len(got), n))
        problems.append(f"TRL's completion ids differ from the sampled ones at token {first} of {n}")
        return problems
    completion_mask = row["completion_mask"].tolist()
    want = [0 if truncated_masked else 1] * n + [0] * (len(completion_mask) - n)
    if completion_mask != want:
        problems.append(f"TRL's completion mask covers {sum(completion_mask)} tokens, the trajectory has {n}"
                        + (" (truncated: TRL masks it out)" if truncated_masked else ""))
    tool_mask = row.get("tool_mask")
    if tool_mask is not None:
        expected = [0] * n if filtered or truncated_masked else list(traj["loss_mask"])
        got = tool_mask[:n].tolist()
        if got != expected:
            first = next(i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b)
            problems.append(f"TRL's env_mask differs from the trajectory's loss mask at token {first} "
                            f"(TRL {got[first]}, trajectory {expected[first]})" + (" (filtered)" if filtered else ""))
    elif any(m == 0 for m in traj["loss_mask"]):
        problems.append("TRL got no env_mask, but the trajectory has interpreter tokens")
    sampled = row.get("sampling_logps")
    logprobs = traj.get("logprobs")
    if sampled is not None and logprobs is not None:
        want_lp = torch.tensor(logprobs, dtype=sampled.dtype)
        got_lp = sampled[:n].cpu()
        if not ((got_lp == want_lp) | (got_lp.isnan() & want_lp.isnan())).all():
            problems.append("TRL's sampling logprobs are not the trajectory's")
    return problems


def check_batch(trajectories: list[dict], batch: dict, *, decode, filtered: list[bool] | None = None,
                truncated_masked: list[bool] | None = None, question_ids: list | None = None, step: int = 0,
                dump: Path | None = None) -> None:
    """Raise `TokenContractViolation` at the first sample that breaks the contract (module docstring)."""
    rows = len(trajectories)
    if batch["completion_ids"].size(0) != rows:
        raise TokenContractViolation(f"step {step}: TRL's batch has {batch['completion_ids'].size(0)} completions "
                                     f"for {rows} trajectories")
    keys = {"prompt_ids": "prompt_ids", "prompt_mask": "prompt_mask", "completion_ids": "completion_ids",
            "completion_mask": "completion_mask", "tool_mask": "tool_mask", "sampling_logps": "sampling_per_token_logps"}
    for i, traj in enumerate(trajectories):
        row = {name: batch[key][i] for name, key in keys.items() if batch.get(key) is not None}
        problems = trajectory_problems(traj, decode) or batch_row_problems(
            traj, row, filtered=bool(filtered and filtered[i]),
            truncated_masked=bool(truncated_masked and truncated_masked[i]))
        if problems:
            _fail(step, i, question_ids[i] if question_ids else None, traj, row, problems, dump)


def _fail(step: int, index: int, question, traj: dict, row: dict, problems: list[str], dump: Path | None) -> None:
    where = ""
    if dump is not None:
        dump.parent.mkdir(parents=True, exist_ok=True)
        record = {"step": step, "sample": index, "question_id": question, "problems": problems, "trajectory": traj,
                  "trl": {k: v.tolist() for k, v in row.items()}}
        dump.write_text(json.dumps(record, ensure_ascii=False) + "\n")
        where = f"; the sample is in {dump}"
    label = f"sample {index}" + (f" ({question})" if question else "")
    raise TokenContractViolation(f"step {step}: token contract broken at {label}: {'; '.join(problems)}{where}. "
                                 f"Text: {traj.get('text', '')[:300]!r}")
