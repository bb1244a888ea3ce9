"""TRL's GRPOTrainer with the two hooks tool-integrated RL needs; the algorithm itself stays TRL's.

- After each generation batch is scored, `after_scoring(trainer, batch)` callbacks run (metrics,
  sample dumps, health checks), with the batch's advantages and the per-group signal.
- `compute_loss` skips micro-batches without learning signal (`torl.train.signal`): no forward,
  no backward; what the optimizer then does follows `zero_signal_updates`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from trl import GRPOTrainer

from torl.train.signal import ZERO_SIGNAL_UPDATES


class ToolGRPOTrainer(GRPOTrainer):
    def __init__(self, *args, zero_signal_updates: str = "coast",
                 after_scoring: list[Callable] | None = None, **kwargs) -> None:
        if zero_signal_updates not in ZERO_SIGNAL_UPDATES:
            raise ValueError(f"zero_signal_updates must be one of {', '.join(ZERO_SIGNAL_UPDATES)}, "
                             f"got {zero_signal_updates!r}")
        super().__init__(*args, **kwargs)
        self.zero_signal_updates = zero_signal_updates
        self.after_scoring = list(after_scoring or [])
        self._skipped_microbatches = 0

    # --- after scoring: the whole generation batch, once per step
    def _generate_and_score_completions(self, inputs):
        batch = super()._generate_and_score_completions(inputs)
        if self.model.training:
            advantages = self.accelerator.gather(batch["advantages"]).view(-1, self.num_generations)
            informative = (advantages != 0).any(dim=1)
            self._metrics["train"]["signal/informative_groups"].append(float(informative.sum()))
            self._metrics["train"]["signal/groups"].append(float(informative.numel()))
            for hook in self.after_scoring:
                hook(self, batch)
        return batch

    # --- the update: no compute on micro-batches without signal
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self._must_compute(inputs):
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
