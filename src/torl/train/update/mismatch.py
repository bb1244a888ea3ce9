"""Sampler/trainer mismatch: measured every step, and corrected with TRL's truncated importance sampling.

torl samples through TRL's `rollout_func` with an engine of its own (`torl.train.rollout_engine`), not
through TRL's `use_vllm`. With `engine: vllm` the sampler holds its own copy of the weights and runs
its own kernels, so the probability it gave a token (`logprobs` of the rollout, TRL's
`sampling_per_token_logps`) differs from the trainer's (TRL's `old_per_token_logps`, the same
weights recomputed by the training forward): the batch is slightly off-policy even at one update per
generation. `engine: transformers` samples with the trainer's very module: on-policy by construction.

**Measured** (`mismatch_metrics`; definitions in torl/metrics/METRICS.md). Per model token t (completion mask 1
and env_mask 1; padding, observations and responses masked out by `filter_void_turns` are not model
tokens here), with δ_t = log π_trainer(y_t) − log π_sampler(y_t):

- `mismatch/abs_logprob_diff`: mean |δ_t|.
- `mismatch/kl`: mean of k3_t = exp(δ_t) − 1 − δ_t (Schulman's k3), the unbiased per-token estimate of
  KL(π_sampler ‖ π_trainer) from tokens the sampler drew (≥ 0 for each token; 0 iff δ_t = 0).
- `..._after_obs`: the same over the first `AFTER_OBS_TOKENS` (8) model tokens after each observation,
  where the context is the interpreter's text, which the model did not write: where a mismatch in
  how the two sides encode that context shows first.
- IS weights (only with the correction): mean weight applied, and the share clipped or masked.
A token whose sampling logprob is NaN (vLLM could not score it; TRL neutralizes it too) is left out.

**Corrected** (`importance_sampling_correction`): TRL's own truncated/masked importance sampling,
unchanged — modes and caps are TRL's `vllm_importance_sampling_mode` (token_truncate, token_mask,
sequence_truncate, sequence_mask; default sequence_mask), `vllm_importance_sampling_clip_max`
(default 3) and `vllm_importance_sampling_clip_min` (default none). TRL 1.16 computes the old
logprobs, the ratio ρ from `sampling_per_token_logps` and multiplies ρ (detached) into the per-token
policy loss under one condition, `self.use_vllm and self.vllm_importance_sampling_correction`; in
`_generate_and_score_completions` and `compute_loss` nothing else reads `use_vllm` but the weight
sync to TRL's own vLLM inside `_generate`. So `TrlSamplerCorrection` raises `use_vllm` around exactly
those two methods and lowers it again inside `_generate`: TRL's maths and its `sampling/*` metrics,
no TRL vLLM object ever built or touched. tests/test_train_tis.py checks the ratio and the loss
against TRL's formula written out by hand, so a TRL release that moves the gate fails there.
"""

from __future__ import annotations

import contextlib
import math

import torch

SETTINGS = ("auto", "on", "off")
IS_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")
AFTER_OBS_TOKENS = 8  # K: model tokens counted after each observation
# order of the per-process sums reduced across processes
_SUMS = ("tokens", "abs", "k3", "tokens_after_obs", "abs_after_obs", "k3_after_obs", "is_units", "is_weight",
         "is_clipped")


def sampler_is_separate(engine_kind: str) -> bool:
    """Whether `engine_kind` samples outside the trainer's module (its own weights and kernels)."""
    return engine_kind != "transformers"


def resolve(correction: str, metrics: str, engine_kind: str) -> tuple[bool, bool]:
    """`(apply the correction, log mismatch/*)` for the config's two settings and the resolved engine kind."""
    if correction not in SETTINGS or metrics not in SETTINGS:
        raise ValueError(f"importance_sampling_correction and mismatch_metrics are one of {', '.join(SETTINGS)}")
    correct = correction == "on" or (correction == "auto" and sampler_is_separate(engine_kind))
    measure = metrics == "on" or (metrics == "auto" and correct)
    return correct, measure


class TrlSamplerCorrection:
    """Turns TRL's importance-sampling code path on for rollout_func batches (module docstring)."""

    def __init__(self, trainer, on: bool) -> None:
        self.trainer, self.on = trainer, on
        if on:
            trainer.vllm_importance_sampling_correction = True  # torl's setting decides (validated against TRL's)

    @contextlib.contextmanager
    def active(self):
        """Around `_generate_and_score_completions` and `compute_loss`."""
        with self._flag(self.on):
            yield

    @contextlib.contextmanager
    def generating(self):
        """Around `_generate`: TRL's vLLM weight sync must never run (our engine syncs itself)."""
        with self._flag(False):
            yield

    @contextlib.contextmanager
    def _flag(self, value: bool):
        saved = self.trainer.use_vllm
        self.trainer.use_vllm = value
        try:
            yield
        finally:
            self.trainer.use_vllm = saved


def after_observation_mask(model_mask: torch.Tensor, observation_mask: torch.Tensor,
                           k: int = AFTER_OBS_TOKENS) -> torch.Tensor:
    """(B, T) bool: model tokens among the first `k` model tokens after an observation token.

    `model_mask`: 1 where the model sampled the token; `observation_mask`: 1 where the interpreter
    wrote it. Model tokens before a response's first observation are never "after" one.
    """
    model, obs = model_mask.long(), observation_mask.long()
    seen = torch.cumsum(obs, dim=1) > 0
    count = torch.cumsum(model, dim=1)  # model tokens so far, this one included
    at_last_obs = torch.cummax(torch.where(obs.bool(), count, torch.zeros_like(count)), dim=1).values
    return model.bool() & seen & (count - at_last_obs <= k)


def raw_is_ratio(trainer_logps: torch.Tensor, sampler_logps: torch.Tensor, model_mask: torch.Tensor,
                 mode: str) -> torch.Tensor:
    """ρ before truncation or masking, as TRL forms it: exp(δ) per token (B, T), or exp(Σ_t δ_t) per
    sequence (B, 1); δ is 0 at non-model tokens and where the sampling logprob is NaN."""
    delta = torch.nan_to_num((trainer_logps - sampler_logps) * model_mask, nan=0.0)
    if mode.startswith("sequence"):
        delta = delta.sum(dim=-1, keepdim=True)
    return torch.exp(delta)


def local_sums(trainer_logps, sampler_logps, model_mask, observation_mask, *, ratio=None, mode=None,
               clip_min=None, clip_max=None) -> torch.Tensor:
    """This process's sums behind every mismatch/* metric (order `_SUMS`); `ratio`: the IS weights TRL
    applied (None without the correction)."""
    model = model_mask.bool() & ~torch.isnan(sampler_logps)
    after = after_observation_mask(model, observation_mask)
    delta = torch.nan_to_num(trainer_logps.float() - sampler_logps.float(), nan=0.0)
    abs_delta, k3 = delta.abs(), torch.expm1(delta) - delta
    sums = [model.sum(), abs_delta[model].sum(), k3[model].sum(),
            after.sum(), abs_delta[after].sum(), k3[after].sum()]
    if ratio is None:
        sums += [0.0, 0.0, 0.0]
    else:
        raw = raw_is_ratio(trainer_logps.float(), sampler_logps.float(), model_mask, mode)
        units = model if ratio.shape[-1] != 1 else model_mask.bool().any(dim=-1, keepdim=True)
        low = -math.inf if clip_min is None else clip_min
        high = math.inf if clip_max is None else clip_max
        clipped = (raw < low) | (raw > high)
        sums += [units.sum(), ratio.float()[units].sum(), clipped[units].sum()]
    return torch.tensor([float(s) for s in sums], dtype=torch.float64, device=trainer_logps.device)


def metrics_from_sums(sums, corrected: bool) -> dict[str, float]:
    """mismatch/* from (process-summed) `local_sums`; an empty denominator is NaN (null in metrics.jsonl)."""
    s = dict(zip(_SUMS, (float(x) for x in sums), strict=True))

    def ratio(num: str, den: str) -> float:
        return s[num] / s[den] if s[den] > 0 else math.nan

    out = {"mismatch/abs_logprob_diff": ratio("abs", "tokens"), "mismatch/kl": ratio("k3", "tokens"),
           "mismatch/abs_logprob_diff_after_obs": ratio("abs_after_obs", "tokens_after_obs"),
           "mismatch/kl_after_obs": ratio("k3_after_obs", "tokens_after_obs")}
    if corrected:
        out["mismatch/is_weight_mean"] = ratio("is_weight", "is_units")
        out["mismatch/is_clipped_frac"] = ratio("is_clipped", "is_units")
    return out


def log_mismatch(trainer, batch: dict, corrected: bool) -> None:
    """Append this generation batch's mismatch/* to TRL's metric buffers (summed over processes first)."""
    sampler = batch.get("sampling_per_token_logps")
    if sampler is None:
        raise RuntimeError("mismatch metrics need the engine's sampling logprobs, and this batch has none")
    completion_mask = batch["completion_mask"]
    tool_mask = batch.get("tool_mask")
    tool_mask = torch.ones_like(completion_mask) if tool_mask is None else tool_mask
    model_mask = completion_mask * tool_mask
    observation_mask = completion_mask * (1 - tool_mask)
    trainer_logps = batch.get("old_per_token_logps")
    if trainer_logps is None:
        trainer_logps = trainer_logprobs(trainer, batch)
    args = trainer.args
    sums = local_sums(trainer_logps, sampler, model_mask, observation_mask,
                      ratio=batch.get("importance_sampling_ratio") if corrected else None,
                      mode=args.vllm_importance_sampling_mode, clip_min=args.vllm_importance_sampling_clip_min,
                      clip_max=args.vllm_importance_sampling_clip_max)
    if trainer.accelerator.num_processes > 1:
        sums = trainer.accelerator.reduce(sums, reduction="sum")
    metrics = metrics_from_sums(sums, corrected)
    mode = "train" if trainer.model.training else "eval"
    for name, value in metrics.items():
        trainer._metrics[mode][name].append(value)


def trainer_logprobs(trainer, batch: dict) -> torch.Tensor:
    """The trainer's per-token logprobs of the batch at the current weights, when TRL computed none
    (one no-grad forward, the one TRL itself runs whenever it needs old logprobs)."""
    from trl.models.utils import disable_gradient_checkpointing

    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    batch_size = trainer.args.per_device_train_batch_size if trainer.model.training else \
        trainer.args.per_device_eval_batch_size
    with torch.no_grad(), disable_gradient_checkpointing(trainer.model, trainer.args.gradient_checkpointing_kwargs):
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, attention, batch["completion_ids"].size(1), batch_size=batch_size)
    return logps
