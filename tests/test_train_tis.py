"""Sampler/trainer mismatch (torl.train.update.mismatch) and the token contract (torl.train.update.contract).

The sampler is a scripted policy whose tokens are fixed (a Python call, its output, a boxed answer)
but whose logprobs come from a copy of the trainer's tiny Llama with perturbed weights: the mismatch
is known to be 0 without perturbation and to grow with it. TRL's importance-sampling correction is
then checked against its formula written out by hand on the very tensors the loss saw.

The vLLM test runs only where vLLM imports (`.venv-vllm`):

    .venv-vllm/bin/python -m pytest -q -p no:cacheprovider tests/test_train_tis.py -k vllm
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import re
from pathlib import Path

import pytest
import torch
from conftest import save_tiny_llama, tiny_recipe, write_questions
from trl import GRPOTrainer

from torl.engines.base import Engine
from torl.engines.scripted import ScriptedEngine
from torl.errors import UserError
from torl.train.config import parse_train_args, validate
from torl.train.trainer import run_training
from torl.train.update.contract import (
    TokenContractViolation,
    check_batch,
    trajectory_problems,
)
from torl.train.update.mismatch import (
    after_observation_mask,
    local_sums,
    metrics_from_sums,
    resolve,
)

QUESTION = re.compile(r"Compute \$(\d+) \\times (\d+)\$")


# --- the metrics' maths, on hand-made tensors

def test_after_observation_mask_takes_the_first_k_model_tokens_after_each_observation():
    #         model model obs obs m  m  m  obs m  m  pad
    model = torch.tensor([[1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 0]])
    obs = torch.tensor([[0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0]])
    got = after_observation_mask(model, obs, k=2)
    assert got.int().tolist() == [[0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 0]]
    assert not after_observation_mask(torch.ones(1, 5, dtype=torch.long), torch.zeros(1, 5, dtype=torch.long)).any()


def test_mismatch_metrics_are_mean_abs_difference_and_k3():
    trainer = torch.tensor([[-1.0, -2.0, -0.5, -3.0]])
    sampler = torch.tensor([[-1.1, -2.0, -0.4, float("nan")]])  # NaN: vLLM could not score it: left out
    model = torch.tensor([[1, 1, 0, 1]])  # token 2 is an observation
    obs = 1 - model
    m = metrics_from_sums(local_sums(trainer, sampler, model, obs), corrected=False)
    delta = torch.tensor([0.1, 0.0])
    assert m["mismatch/abs_logprob_diff"] == pytest.approx(0.05, abs=1e-6)
    assert m["mismatch/kl"] == pytest.approx(float((delta.exp() - 1 - delta).mean()), abs=1e-7)
    assert math.isnan(m["mismatch/kl_after_obs"])  # the one token after the observation was NaN
    assert "mismatch/is_weight_mean" not in m


def test_auto_corrects_only_a_sampler_other_than_the_trainers_module():
    assert resolve("auto", "auto", "vllm") == (True, True)
    assert resolve("auto", "auto", "transformers") == (False, False)
    assert resolve("auto", "on", "transformers") == (False, True)
    assert resolve("on", "off", "transformers") == (True, False)


def _cfg(tmp_path, *extra):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: smollm2-135m\ntrain_tasks: [arithmetic]\nuse_cpu: true\nbf16: false\n"
                      f"run_dir: {tmp_path / 'run'}\nmax_tool_calls: 0\n")
    return parse_train_args(["--config", str(recipe), *extra])


@pytest.mark.parametrize(("flags", "message"), [
    (["--importance_sampling_correction", "yes"], "importance_sampling_correction must be one of auto, on, off"),
    (["--mismatch_metrics", "always"], "mismatch_metrics must be one of"),
    (["--importance_sampling_correction", "on", "--vllm_importance_sampling_correction", "false"],
     "set it to off instead"),
    (["--importance_sampling_correction", "on", "--vllm_importance_sampling_mode", "tokens"],
     "vllm_importance_sampling_mode must be one of"),
    (["--importance_sampling_correction", "on", "--vllm_importance_sampling_clip_max", "0"], "must be > 0"),
    (["--importance_sampling_correction", "on", "--loss_type", "vespo"], "loss_type=vespo needs"),
])
def test_bad_correction_settings_are_one_clear_line(tmp_path, flags, message):
    with pytest.raises(UserError, match=message):
        validate(*_cfg(tmp_path, *flags))


def test_correction_settings_are_not_checked_when_it_is_off(tmp_path):
    validate(*_cfg(tmp_path, "--vllm_importance_sampling_correction", "false", "--loss_type", "vespo"))


# --- the token contract, on hand-made batches

class CharTokenizer:
    """One character per token id (ord); decode skips nothing special."""

    def __call__(self, ids):
        return "".join(chr(i) for i in ids)


def _trajectory():
    completion = [ord(c) for c in "ab"] + [ord(c) for c in "OUT"] + [ord(c) for c in "cd"]
    return {"prompt_ids": [80, 81], "completion_ids": completion, "loss_mask": [1, 1, 0, 0, 0, 1, 1],
            "logprobs": [-0.5, -0.25, 0.0, 0.0, 0.0, -1.0, -0.125],
            "calls": [{"code": "x", "executed": True, "token_start": 2, "token_end": 5, "observation": "OUT"}],
            "segments": [{"kind": "model", "text": "ab"}, {"kind": "tool", "text": "OUT"},
                         {"kind": "model", "text": "cd"}],
            "text": "abOUTcd", "model_tokens": 4, "tool_tokens": 3}


def _batch(trajectories, pad=0):
    """What TRL builds: left-padded prompts, right-padded completions, env_mask padded with 1."""
    width = max(len(t["completion_ids"]) for t in trajectories) + 2
    plen = max(len(t["prompt_ids"]) for t in trajectories) + 1
    rows = {k: [] for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "tool_mask",
                            "sampling_per_token_logps")}
    for t in trajectories:
        n, p = len(t["completion_ids"]), len(t["prompt_ids"])
        rows["prompt_ids"].append([pad] * (plen - p) + t["prompt_ids"])
        rows["prompt_mask"].append([0] * (plen - p) + [1] * p)
        rows["completion_ids"].append(t["completion_ids"] + [pad] * (width - n))
        rows["completion_mask"].append([1] * n + [0] * (width - n))
        rows["tool_mask"].append(t["loss_mask"] + [1] * (width - n))
        rows["sampling_per_token_logps"].append(t["logprobs"] + [0.0] * (width - n))
    return {k: torch.tensor(v) for k, v in rows.items()}


def test_a_good_batch_passes_the_contract():
    trajs = [_trajectory(), _trajectory()]
    assert trajectory_problems(trajs[0], CharTokenizer()) == []
    check_batch(trajs, _batch(trajs), decode=CharTokenizer())


@pytest.mark.parametrize(("corrupt", "message"), [
    (lambda t, b: b["completion_ids"][1].__setitem__(5, ord("X")), "completion ids differ .* at token 5"),
    (lambda t, b: b["tool_mask"][1].__setitem__(3, 1), "env_mask differs .* at token 3"),
    (lambda t, b: b["prompt_ids"][1].__setitem__(-1, 7), "prompt"),
    (lambda t, b: b["completion_mask"][1].__setitem__(-1, 1), "completion mask covers 8 tokens, .* has 7"),
    (lambda t, b: b["sampling_per_token_logps"][1].__setitem__(0, -0.6), "sampling logprobs"),
    (lambda t, b: t[1]["loss_mask"].__setitem__(1, 0), "loss_mask differs from the executed calls' .* token 1"),
    (lambda t, b: t[1]["calls"][0].__setitem__("token_end", 4), "loss_mask differs|tool segments"),
    (lambda t, b: t[1]["segments"][1].__setitem__("text", "OUT!"), "tool segments do not decode"),
    (lambda t, b: t[1]["completion_ids"].pop(), "loss_mask has 7 entries for 6"),
])
def test_a_corrupted_batch_breaks_the_contract_and_names_the_sample(tmp_path, corrupt, message):
    trajs = [_trajectory(), _trajectory()]
    batch = _batch(trajs)
    corrupt(trajs, batch)
    dump = tmp_path / "violation.jsonl"
    with pytest.raises(TokenContractViolation, match=f"step 3: token contract broken at sample 1 \\(q7\\): .*{message}"):
        check_batch(trajs, batch, decode=CharTokenizer(), question_ids=["q0", "q7"], step=3, dump=dump)
    record = json.loads(dump.read_text())
    assert record["sample"] == 1 and record["question_id"] == "q7" and record["trajectory"]["text"] == "abOUTcd"
    assert len(record["trl"]["completion_ids"]) == batch["completion_ids"].size(1)


def test_filtered_and_truncated_rows_expect_all_zero_masks():
    trajs = [_trajectory(), _trajectory()]
    batch = _batch(trajs)
    batch["tool_mask"][0, :7] = 0  # filter_void_turns took sample 0 out of the loss
    batch["completion_mask"][1] = 0  # TRL's mask_truncated_completions
    batch["tool_mask"][1] = 0
    check_batch(trajs, batch, decode=CharTokenizer(), filtered=[True, False], truncated_masked=[False, True])
    with pytest.raises(TokenContractViolation, match="sample 0"):
        check_batch(trajs, batch, decode=CharTokenizer(), truncated_masked=[False, True])


# --- training runs: a scripted policy scored by a perturbed copy of the trainer's model

class PerturbedScorer(Engine):
    """The scripted turns, with the logprobs a perturbed copy of the policy gives them (tempered like
    TRL's: log_softmax(logits / temperature)). `noise` 0 = the trainer's weights exactly."""

    def __init__(self, inner: ScriptedEngine, model, noise: float, seed: int = 0) -> None:
        self.inner, self.tokenizer = inner, inner.tokenizer
        self.model = copy.deepcopy(model).eval()
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.model.parameters():
                p.add_(torch.randn(p.shape, generator=generator) * noise * p.abs().mean())

    async def generate(self, prompt_ids, params):
        gen = await self.inner.generate(prompt_ids, params)
        ids = torch.tensor([list(prompt_ids) + gen.token_ids])
        with torch.no_grad():
            logits = self.model(ids).logits[0, len(prompt_ids) - 1:-1].float() / params.temperature
        logprobs = torch.log_softmax(logits, -1).gather(1, torch.tensor(gen.token_ids)[:, None])[:, 0]
        return dataclasses.replace(gen, logprobs=logprobs.tolist())


def _factory(noise: float):
    """Python computes the product; every other response of a group boxes it off by one (GRPO signal)."""

    def factory(kind, model, tokenizer, model_path, grpo_cfg):
        counter = itertools.count()

        def script(prompt_ids, turn):
            a, b = map(int, QUESTION.findall(tokenizer.decode(prompt_ids))[-1])
            if turn == 0:
                return f"Let me compute it.\n```python\nprint({a} * {b})\n```\n```output"
            return f"The product is \\boxed{{{a * b + next(counter) % 2}}}."

        return PerturbedScorer(ScriptedEngine(tokenizer, script), model, noise), False

    return factory


def _recipe(tmp_path: Path, model_dir: Path, *extra: str):
    data = write_questions(tmp_path, [(12, 3), (25, 4)])
    recipe = tiny_recipe(tmp_path, model_dir, train_files=[data], max_response_tokens=64, max_steps=1,
                         save_steps=100, report_to=[])
    return parse_train_args(["--config", str(recipe), *extra])


def _rows(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def loss_inputs(monkeypatch):
    """What TRL's loss saw, and what it returned, per micro-batch."""
    seen = []
    original = GRPOTrainer._compute_loss

    def capture(self, model, inputs):
        loss = original(self, model, inputs)
        seen.append(({k: v.detach().clone() if torch.is_tensor(v) else v for k, v in inputs.items()},
                     loss.detach().clone(), self.use_vllm))
        return loss

    monkeypatch.setattr(GRPOTrainer, "_compute_loss", capture)
    return seen


def trl_is_ratio(old, sampled, mask, mode, clip_min, clip_max):
    """TRL 1.16's importance-sampling ratio (grpo_trainer.py, `vllm_importance_sampling_mode`), by hand."""
    diff = torch.nan_to_num((old - sampled) * mask, nan=0.0)
    if mode.startswith("sequence"):
        diff = diff.sum(-1, keepdim=True)
    ratio = torch.exp(diff)
    low = -math.inf if clip_min is None else clip_min
    high = math.inf if clip_max is None else clip_max
    if mode.endswith("truncate"):
        return ratio.clamp(min=clip_min, max=clip_max)
    return ratio.masked_fill((ratio < low) | (ratio > high), 0.0)


@pytest.mark.slow
def test_mismatch_is_zero_for_the_same_weights_and_grows_with_the_perturbation(tmp_path, tiny_model_dir):
    measured = {}
    for noise in (0.0, 0.02, 0.2):
        out = tmp_path / f"noise{noise}"
        out.mkdir()
        # noise 0 measures without correcting (TRL computes no old logprobs here: torl runs the forward)
        flags = (["--importance_sampling_correction", "off", "--mismatch_metrics", "on"] if noise == 0 else
                 ["--importance_sampling_correction", "on"])
        assert run_training(*_recipe(out, tiny_model_dir, *flags), engine_factory=_factory(noise)) == 0
        (row,) = _rows(out)
        measured[noise] = row
    zero, small, large = measured[0.0], measured[0.02], measured[0.2]
    assert zero["mismatch/abs_logprob_diff"] < 1e-4 and zero["mismatch/kl"] < 1e-7
    assert "mismatch/is_weight_mean" not in zero and "sampling/importance_sampling_ratio/mean" not in zero
    for name in ("mismatch/abs_logprob_diff", "mismatch/kl", "mismatch/abs_logprob_diff_after_obs",
                 "mismatch/kl_after_obs"):
        assert zero[name] < small[name] < large[name], name
        assert 100 * zero[name] < small[name], name
    assert small["mismatch/is_weight_mean"] > 0 and "mismatch/is_clipped_frac" in small
    assert small["sampling/importance_sampling_ratio/mean"] > 0  # TRL's own code path ran


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["token_truncate", "sequence_truncate"])
def test_the_correction_weights_the_loss_as_trls_formula(tmp_path, tiny_model_dir, loss_inputs, mode):
    clip_min, clip_max = (0.95, 1.05) if mode == "token_truncate" else (0.5, 7.0)
    cfg = _recipe(tmp_path, tiny_model_dir, "--importance_sampling_correction", "on", "--loss_type", "grpo",
                  "--vllm_importance_sampling_mode", mode, "--vllm_importance_sampling_clip_min", str(clip_min),
                  "--vllm_importance_sampling_clip_max", str(clip_max))
    assert run_training(*cfg, engine_factory=_factory(1.0)) == 0
    ((inputs, loss, flag),) = loss_inputs
    assert flag is True  # TRL's gate was open inside the loss ...
    mask = inputs["completion_mask"] * inputs["tool_mask"]
    assert (inputs["tool_mask"] == 0).any() and mask.sum() > 0  # observations in the batch, masked out
    old, sampled = inputs["old_per_token_logps"], inputs["sampling_per_token_logps"]
    ratio = trl_is_ratio(old, sampled, mask, mode, clip_min, clip_max)
    torch.testing.assert_close(inputs["importance_sampling_ratio"], ratio)
    # One step, one micro-batch: the policy is the one that scored old_per_token_logps, so TRL's PPO
    # ratio is 1 and its per-token loss is -A (loss_type grpo: mean over sequences of token means).
    advantages = inputs["advantages"][:, None]
    assert (advantages != 0).any()

    def grpo_loss(weight):
        return ((-advantages * weight * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()

    assert loss.item() == pytest.approx(grpo_loss(ratio).item(), rel=1e-4, abs=1e-6)
    # Uncorrected, this group's advantages cancel exactly (loss 0); the weights move it well past rounding.
    assert abs(grpo_loss(torch.ones_like(ratio)).item() - loss.item()) > 1e-5
    (row,) = _rows(tmp_path)
    units = mask.bool() if mode.startswith("token") else mask.bool().any(-1, keepdim=True)
    raw = trl_is_ratio(old, sampled, mask, mode.replace("truncate", "mask"), None, None)  # no bounds: untouched
    clipped = ((raw < clip_min) | (raw > clip_max))[units].float().mean().item()
    assert 0 < clipped < 1 and row["mismatch/is_clipped_frac"] == pytest.approx(clipped)
    assert row["mismatch/is_weight_mean"] == pytest.approx(ratio[units].mean().item(), rel=1e-5)


@pytest.mark.slow
def test_a_batch_that_breaks_the_token_contract_stops_the_run(tmp_path, tiny_model_dir, monkeypatch, capsys):
    from torl.train.rollout import ToolRolloutFunc

    rollout = ToolRolloutFunc.__call__

    def drift(self, prompts, trainer):
        out = rollout(self, prompts, trainer)
        start = out["trajectory"][2]["calls"][0]["token_start"]
        out["env_mask"][2] = list(out["env_mask"][2])
        out["env_mask"][2][start] = 1  # an observation token would be trained on
        return out

    monkeypatch.setattr(ToolRolloutFunc, "__call__", drift)
    cfg = _recipe(tmp_path, tiny_model_dir)
    assert run_training(*cfg, engine_factory=_factory(0.0)) == 1
    err = capsys.readouterr().err
    assert "token contract broken at sample 2" in err and "env_mask differs" in err
    (dump,) = (tmp_path / "run").glob("token_contract_violation_*.jsonl")
    record = json.loads(dump.read_text())
    assert record["sample"] == 2 and record["trl"]["tool_mask"][start_of(record)] == 1


def start_of(record: dict) -> int:
    return record["trajectory"]["calls"][0]["token_start"]


# --- engine=vllm on vLLM's CPU build: the correction is on by default and TRL applies it

@pytest.mark.slow
def test_vllm_engine_logs_the_mismatch_and_applies_the_correction(tmp_path_factory, tmp_path, monkeypatch,
                                                                   loss_inputs):
    pytest.importorskip("vllm")
    from torl.train.rewards import TorlReward

    # head_dim 64: a size vLLM's CPU attention kernels support
    model_dir = save_tiny_llama(tmp_path_factory.mktemp("tiny-llama-vllm"), hidden_size=128, heads=2, kv_heads=1)
    scored = TorlReward.__call__
    monkeypatch.setattr(TorlReward, "__call__",  # spread the rewards: the loss must run
                        lambda self, *a, **k: [r + (i % 2) for i, r in enumerate(scored(self, *a, **k))])
    recipe = tiny_recipe(tmp_path, model_dir, name="tiny-vllm.yaml", engine="vllm", sandbox_workers=2,
                         train_tasks=["arithmetic"], train_task_count=8, gradient_checkpointing=False,
                         per_device_train_batch_size=8, max_response_tokens=32, max_steps=1, save_steps=100,
                         report_to=[])
    assert run_training(*parse_train_args(["--config", str(recipe)])) == 0
    (row,) = _rows(tmp_path)
    # fp32 on both sides: vLLM's kernels differ from the trainer's only in rounding
    assert 0 < row["mismatch/abs_logprob_diff"] < 1e-2 and 0 <= row["mismatch/kl"] < 1e-3
    assert "mismatch/kl_after_obs" in row  # null when no response called the tool
    assert 0 < row["mismatch/is_weight_mean"] and row["mismatch/is_clipped_frac"] is not None
    assert row["sampling/importance_sampling_ratio/mean"] > 0  # TRL's own correction ran
    ((inputs, loss, flag),) = loss_inputs
    assert flag is True and math.isfinite(loss.item())
    mask = inputs["completion_mask"] * inputs["tool_mask"]
    ratio = trl_is_ratio(inputs["old_per_token_logps"], inputs["sampling_per_token_logps"], mask,
                         "sequence_mask", None, 3.0)  # TRL's defaults
    torch.testing.assert_close(inputs["importance_sampling_ratio"], ratio)
