"""One model turn, the step both protocols' loops begin with: sample what fits in the response
budget, stopping at the protocol's call triggers while calls are left, and record it (tokens with
mask 1, the model's text segment). Apart from `loop.py` so that `tool_turns.py` shares it without
importing the loop that imports it."""

from __future__ import annotations

import dataclasses

from torl.engines.base import Engine, Generation, SamplingParams
from torl.tir.seeds import derive_seed
from torl.tir.trajectory import Trajectory, append_tokens


@dataclasses.dataclass
class Turn:
    gen: Generation       # what the engine returned (tokens as sampled, why it stopped)
    text: str             # the model's text since the last observation (where calls are looked for)
    calls_left: int       # C minus the calls made before this turn


async def generate_turn(engine: Engine, traj: Trajectory, config, call_stops: tuple[str, ...]) -> Turn | None:
    """The next model turn of `traj` under `config` (a RolloutConfig); None, with the trajectory
    marked truncated, when the budget is spent before it."""
    remaining = config.max_response_tokens - len(traj.completion_ids)
    if remaining <= 0:
        traj.truncated, traj.finish_reason = True, "length"
        return None
    calls_left = config.max_tool_calls - len(traj.calls)
    params = SamplingParams(
        max_tokens=remaining, temperature=config.temperature, top_p=config.top_p, top_k=config.top_k,
        stop=(call_stops if calls_left > 0 else ()) + tuple(config.stop_strings),
        seed=derive_seed(config.seed, "turn", traj.num_turns), logprobs=config.logprobs)
    gen = await engine.generate(traj.prompt_ids + traj.completion_ids, params)
    if not gen.token_ids:
        raise RuntimeError(f"{type(engine).__name__} returned no tokens for a request with max_tokens={remaining}")
    traj.num_turns += 1
    append_tokens(traj, gen.token_ids, gen.logprobs, mask=1)
    return Turn(gen, add_model_text(traj, engine.tokenizer.decode(gen.token_ids, skip_special_tokens=True)),
                calls_left)


def add_model_text(traj: Trajectory, text: str) -> str:
    """Append model text; a generation resumed without an observation extends the same segment.
    Returns the model's text since the last observation (where calls are looked for)."""
    if traj.segments and traj.segments[-1]["kind"] == "model":
        traj.segments[-1]["text"] += text
    else:
        traj.segments.append({"kind": "model", "text": text})
    return traj.segments[-1]["text"]
