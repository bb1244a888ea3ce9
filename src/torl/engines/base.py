"""The one async protocol every generation engine implements.

A rollout loop calls `generate` once per turn of one trajectory; engines batch concurrent
calls themselves (continuous batching in vLLM, request coalescing in transformers), so one
trajectory waiting on the sandbox never holds the others back.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1                       # -1 = off
    stop: tuple[str, ...] = ()            # stop strings; the text that matched stays in the output
    seed: int | None = None
    logprobs: bool = True                 # return the sampled token's logprob at each position


@dataclasses.dataclass
class Generation:
    token_ids: list[int]                  # exactly the sampled tokens, never re-tokenized
    logprobs: list[float] | None          # one per token_id (logprob of the sampled token)
    finish_reason: str                    # "stop" (stop string or EOS) | "length"
    stop_reason: str | int | None = None  # the stop string / EOS id that ended it, None if length
    text: str = ""                        # decode of token_ids, for convenience


class Engine(abc.ABC):
    """Generation backend. `tokenizer` is the HF tokenizer matching the model."""

    tokenizer: object

    @abc.abstractmethod
    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> Generation: ...

    async def load_weights(self, named_tensors) -> None:
        """Replace the policy weights (iterable of (name, tensor)), for on-policy RL."""
        raise NotImplementedError(f"{type(self).__name__} cannot load weights from a trainer")

    async def aclose(self) -> None:
        return None

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.aclose()
