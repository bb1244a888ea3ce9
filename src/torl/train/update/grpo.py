"""TRL's GRPOTrainer with the two hooks tool-integrated RL needs; the algorithm itself stays TRL's.

- After each generation batch is scored, `after_scoring(trainer, batch)` callbacks run (metrics,
  sample dumps, health checks), with the batch's advantages and the per-group signal.
- `compute_loss` skips micro-batches without learning signal (`torl.train.update.signal`): no forward,
  no backward; what the optimizer then does follows `zero_signal_updates`.
- Rows that share their prompt (a GRPO group) are scored with one prompt forward
  (`torl.train.update.shared_prompt`, `share_prompt_forward`): the same logps and gradients for less compute.
- Every generation batch is checked against its trajectories (`torl.train.update.contract`): TRL trains
  exactly the sampled tokens plus the observations, under the recorded loss mask.
- With a sampler other than the trainer's module (engine=vllm), TRL's importance-sampling correction
  runs on our rollouts and `mismatch/*` is logged (`torl.train.update.mismatch`, `sampler_correction`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from trl import GRPOTrainer

from torl.train.update.contract import check_batch
from torl.train.update.mismatch import TrlSamplerCorrection, log_mismatch
from torl.train.update.shared_prompt import prompt_groups, shared_prompt_logps
from torl.train.update.signal import ZERO_SIGNAL_UPDATES


class ToolGRPOTrainer(GRPOTrainer):
    def __init__(self, *args, zero_signal_updates: str = "coast",
                 after_scoring: list[Callable] | None = None, share_prompt_forward: bool = False,
                 sampler_correction: bool = False, mismatch_metrics: bool = False,
                 contract_dump: Callable[[int], Path] | None = None, **kwargs) -> None:
        if zero_signal_updates not in ZERO_SIGNAL_UPDATES:
            raise ValueError(f"zero_signal_updates must be one of {', '.join(ZERO_SIGNAL_UPDATES)}, "
                             f"got {zero_signal_updates!r}")
        super().__init__(*args, **kwargs)
        self.zero_signal_updates = zero_signal_updates
        self.after_scoring = list(after_scoring or [])
        self._skipped_microbatches = 0
        self.sampler_correction = TrlSamplerCorrection(self, sampler_correction)
        self.mismatch_metrics = mismatch_metrics
        self.contract_dump = contract_dump  # step -> where a token-contract violation's sample is written
        # exact only with a KV cache and one forward per backward (module docstring of shared_prompt)
        self.share_prompt_forward = (share_prompt_forward and self.accelerator.num_processes == 1
                                     and not self.args.gradient_checkpointing)

    # --- after scoring: the whole generation batch, once per step
    def _generate_and_score_completions(self, inputs):
        with self.sampler_correction.active():
            batch = super()._generate_and_score_completions(inputs)
        self._check_token_contract(inputs, batch)
        if self.mismatch_metrics:
            log_mismatch(self, batch, corrected=self.sampler_correction.on)
        if self.model.training:
            advantages = self.accelerator.gather(batch["advantages"]).view(-1, self.num_generations)
            informative = (advantages != 0).any(dim=1)
            self._metrics["train"]["signal/informative_groups"].append(float(informative.sum()))
            self._metrics["train"]["signal/groups"].append(float(informative.numel()))
            for hook in self.after_scoring:
                hook(self, batch)
        return batch

    def _generate(self, prompts):
        with self.sampler_correction.generating():
            out = super()._generate(prompts)
        if (self.sampler_correction.on or self.mismatch_metrics) and out[4] is None:  # (..., logprobs, ...)
            raise RuntimeError("importance_sampling_correction / mismatch_metrics need the engine's sampling "
                               "logprobs, and this engine returned none; set both to off for this engine")
        return out

    def _check_token_contract(self, inputs, batch) -> None:
        if not inputs or "trajectory" not in inputs[0]:
            return  # not our rollout_func: nothing recorded to check against
        eos_and_pad = [*self.eos_token_ids, self._tokenizer.pad_token_id]
        ends = [x["trajectory"]["completion_ids"][-1:] for x in inputs]  # TRL: not ending in EOS = truncated
        truncated = [self.mask_truncated_completions and bool(end) and end[0] not in eos_and_pad for end in ends]
        step = self.state.global_step + 1
        check_batch([x["trajectory"] for x in inputs], batch,
                    decode=lambda ids: self._tokenizer.decode(ids, skip_special_tokens=True),
                    filtered=[bool(x.get("loss_filtered")) for x in inputs], truncated_masked=truncated,
                    question_ids=[x.get("question_id") for x in inputs], step=step,
                    dump=None if self.contract_dump is None else self.contract_dump(step))

    # --- scoring: one prompt forward per group of rows sharing it
    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, **multimodal):
        def trl(rows):
            return super(ToolGRPOTrainer, self)._get_per_token_logps_and_entropies(
                model, input_ids[rows], attention_mask[rows], logits_to_keep, batch_size=batch_size,
                compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, **multimodal)

        if not self.share_prompt_forward or compute_aux_loss or any(v is not None for v in multimodal.values()):
            return trl(slice(None))
        order, logps, entropies = [], [], []
        for rows in prompt_groups(input_ids, attention_mask, logits_to_keep):
            index = torch.tensor(rows, device=input_ids.device)
            shared = shared_prompt_logps(model, input_ids[index], attention_mask[index], logits_to_keep,
                                         compute_entropy)
            part_logps, part_entropies = shared if shared is not None else trl(index)[:2]
            order.append(index)
            logps.append(part_logps)
            entropies.append(part_entropies)
        back = torch.argsort(torch.cat(order))  # rows back into the batch's order
        return torch.cat(logps)[back], (torch.cat(entropies)[back] if compute_entropy else None), None

    # --- the update: no compute on micro-batches without signal
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self._must_compute(inputs):
            with self.sampler_correction.active():  # TRL multiplies its IS ratio into the per-token loss
                loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        else:
            self._skipped_microbatches += 1
            loss = self._no_signal_loss(model)
        if (self._step + 1) % self.current_gradient_accumulation_steps == 0:  # the step's last micro-batch
            accumulated = self.current_gradient_accumulation_steps
            self._metrics["train"]["signal/skipped_microbatches"].append(float(self._skipped_microbatches))
            self._metrics["train"]["signal/update_skipped"].append(
                float(self._skipped_microbatches == accumulated and self.zero_signal_updates == "skip"))
            self._skipped_microbatches = 0
        return loss

    def _must_compute(self, inputs) -> bool:
        if self.zero_signal_updates == "compute" or self.beta != 0.0:
            return True
        has_signal = (inputs["advantages"] != 0).any().float()
        if self.accelerator.num_processes > 1:  # every rank must take the same branch (DDP's all-reduce)
            has_signal = self.accelerator.reduce(has_signal, reduction="sum")
        return bool(has_signal > 0)

    def _no_signal_loss(self, model) -> torch.Tensor:
        """A loss whose backward costs nothing. `coast`: every trainable parameter gets an exact zero
        gradient, so the optimizer steps as TRL's would after a zero-advantage batch; `skip`: no
        parameter gets a gradient, so the optimizer leaves the weights (and its moments) alone."""
        if self.zero_signal_updates == "coast":
            return sum(p.sum() for p in model.parameters() if p.requires_grad) * 0.0
        return torch.zeros((), device=self.accelerator.device, requires_grad=True)
