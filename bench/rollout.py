"""Rollout benchmark.

Part 1 (default, no model): orchestration overhead of tool latency. A simulated continuous-batching
engine (ScriptedEngine: fixed time per decode step for the whole running batch, at most
--batch requests per step) and a sandbox with fixed latency; N trajectories with C = 2 calls and
varied turn lengths. For torl's per-trajectory loop and for a lock-step round-based loop
(ToRL/TRL style: every trajectory generates a turn, then all tools run, then the next turn) it
prints wall(with tool latency) / wall(same token work, zero tool latency), measured in this run.

Part 2 (--real): SmolLM2-135M on arithmetic questions with real engines and the LocalSandbox:
tokens/s, tool calls, and wall time split into generation-busy vs sandbox-busy time.

    .venv/bin/python bench/rollout.py                      # part 1, ~1 min
    .venv/bin/python bench/rollout.py --real --questions 32 --engines transformers,vllm
    .venv/bin/python bench/rollout.py --real --engines transformers,transformers-no-admit   # mid-batch admission off
    .venv/bin/python bench/rollout.py --smoke              # both parts tiny (transformers engine), < 2 min
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

from torl.engines.base import SamplingParams
from torl.engines.scripted import ScriptedEngine, ToyTokenizer
from torl.sandbox.base import Sandbox
from torl.sandbox.result import ExecResult, ExecStatus
from torl.tir.loop import OUTPUT_FENCE, RolloutConfig, _observation_suffix, rollout_many
from torl.tir.parsing import complete_python_blocks


class LatencySandbox(Sandbox):
    """Answers every run after a fixed latency."""

    def __init__(self, latency: float):
        self.latency = latency

    async def run(self, code, *, timeout=None, memory_mb=None, session=None):
        await asyncio.sleep(self.latency)
        return ExecResult(ExecStatus.OK, stdout="42\n", exit_code=0, duration_s=self.latency)

    async def open_session(self):
        return "s"

    async def close_session(self, session):
        return None

    async def health_check(self):
        return None

    async def aclose(self):
        return None


def make_script(num: int, calls: int, seed: int):
    """Per-trajectory turns of varied length: `calls` code turns then a final answer."""
    rng = random.Random(seed)
    scripts = {}
    for i in range(num):
        turns = [("x" * rng.randint(10, 110)) + "\n```python\nprint(42)\n```\n```output\n" for _ in range(calls)]
        turns.append(("y" * rng.randint(10, 110)) + " \\boxed{42}")
        scripts[i] = turns
    return scripts


def observation_formatter(result, max_chars):
    return result.stdout


async def lockstep_rollouts(engine, sandbox, prompts, config: RolloutConfig) -> None:
    """Round-based baseline: a round generates one turn for every live trajectory, then runs all tools."""
    tok = engine.tokenizer
    contexts = [list(p) for p in prompts]
    live = list(range(len(prompts)))
    for round_index in range(config.max_tool_calls + 1):
        stop = (OUTPUT_FENCE,) if round_index < config.max_tool_calls else ()
        params = SamplingParams(max_tokens=config.max_response_tokens, stop=stop)
        gens = await asyncio.gather(*(engine.generate(contexts[i], params) for i in live))
        pending = []
        for i, gen in zip(live, gens):
            contexts[i] += gen.token_ids
            text = tok.decode(gen.token_ids)
            blocks = complete_python_blocks(text)
            if gen.stop_reason == OUTPUT_FENCE and blocks:
                pending.append((i, text, blocks[-1], gen.stop_reason))
        results = await asyncio.gather(*(sandbox.run(code) for _, _, code, _ in pending))
        for (i, text, _, stop), result in zip(pending, results):
            suffix = _observation_suffix(text, observation_formatter(result, 0).rstrip("\n"), stop)
            contexts[i] += tok.encode(suffix)
        live = [i for i, *_ in pending]
        if not live:
            return


async def time_loop(kind: str, args, latency: float) -> tuple[float, int]:
    tok = ToyTokenizer()
    scripts = make_script(args.trajectories, args.calls, args.seed)
    prompts = [tok.encode(f"<q{i:04d}>") for i in range(args.trajectories)]
    by_prompt = {tuple(p): i for i, p in enumerate(prompts)}

    def script(context, turn):
        return scripts[by_prompt[tuple(context[: len(prompts[0])])]][turn]

    engine = ScriptedEngine(tok, script, step_time=args.step_time, max_batch_size=args.batch)
    config = RolloutConfig(max_tool_calls=args.calls, max_response_tokens=4096, observation_formatter=observation_formatter)
    sandbox = LatencySandbox(latency)
    start = time.perf_counter()
    if kind == "torl":
        await rollout_many(engine, sandbox, prompts, config)
    else:
        await lockstep_rollouts(engine, sandbox, prompts, config)
    return time.perf_counter() - start, engine.decode_steps


def part1(args) -> None:
    tokens_per_traj = (args.calls + 1) * (60 + 30)  # mean scripted turn length
    gen_time = tokens_per_traj * args.step_time
    print(f"part 1: {args.trajectories} trajectories, C={args.calls}, step {args.step_time * 1e3:.1f} ms, "
          f"batch {args.batch}, tool latency {args.latency * 1e3:.0f} ms/call "
          f"(~{100 * args.calls * args.latency / gen_time:.0f}% of a trajectory's own generation time)")
    for kind in ("torl", "lockstep"):
        with_tools, steps = asyncio.run(time_loop(kind, args, args.latency))
        without, steps0 = asyncio.run(time_loop(kind, args, 0.0))
        print(f"  {kind:9s} wall with tools {with_tools:6.2f}s  zero-latency {without:6.2f}s  "
              f"ratio {with_tools / without:5.3f}  (decode steps {steps} vs {steps0})")


def part2(args) -> None:
    from torl.engines import make_engine
    from torl.sandbox import LocalSandbox
    from torl.tir.templates import get_template

    rng = random.Random(args.seed)
    questions = [(rng.randint(100, 999), rng.randint(10, 99)) for _ in range(args.questions)]
    template = get_template("torl_fewshot")
    for name in args.engines.split(","):
        load = time.perf_counter()
        # transformers-no-admit: torl's engine with requests waiting for the running batch to drain
        options = {"admit_mid_batch": False} if name == "transformers-no-admit" else {}
        engine = make_engine(name.removesuffix("-no-admit"), "smollm2-135m", **options)
        load = time.perf_counter() - load
        tok = engine.tokenizer
        prefix = tok("Let me compute the product with Python.\n", add_special_tokens=False).input_ids
        prompts = [template.encode(f"What is {a} * {b}?", tok) + prefix for a, b in questions]
        # block_close: the 135M model closes its python block but rarely writes ```output itself,
        # so with the default trigger it would make no tool calls here
        config = RolloutConfig(max_tool_calls=2, max_response_tokens=args.max_tokens, temperature=1.0, seed=args.seed,
                               stop_strings=template.stop, call_trigger="block_close")
        busy = {"gen": BusyClock(), "tool": BusyClock()}
        engine.generate = busy["gen"].wrap(engine.generate)

        async def run(engine=engine, prompts=prompts, config=config, busy=busy):
            async with LocalSandbox() as sandbox:
                await sandbox.start()
                sandbox.run = busy["tool"].wrap(sandbox.run)
                start = time.perf_counter()
                trajs = await rollout_many(engine, sandbox, prompts, config)
                wall = time.perf_counter() - start
            await engine.aclose()
            return trajs, wall

        trajs, wall = asyncio.run(run())
        model_tokens = sum(t.model_tokens for t in trajs)
        correct = sum(f"\\boxed{{{a * b}}}" in t.text for t, (a, b) in zip(trajs, questions))
        print(f"part 2 [{name}] load {load:.1f}s  wall {wall:.1f}s  generation-busy {busy['gen'].total:.1f}s  "
              f"sandbox-busy {busy['tool'].total:.1f}s  model tokens {model_tokens} "
              f"({model_tokens / wall:.1f} tok/s)  tool calls {sum(t.num_calls for t in trajs)}  "
              f"sandbox errors {sum(t.sandbox_errors for t in trajs)}  boxed-correct {correct}/{len(trajs)}")


class BusyClock:
    """Wall time during which at least one wrapped call was in flight."""

    def __init__(self):
        self.total, self._active, self._since = 0.0, 0, 0.0

    def wrap(self, fn):
        async def wrapped(*a, **kw):
            if self._active == 0:
                self._since = time.perf_counter()
            self._active += 1
            try:
                return await fn(*a, **kw)
            finally:
                self._active -= 1
                if self._active == 0:
                    self.total += time.perf_counter() - self._since

        return wrapped


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trajectories", type=int, default=64)
    p.add_argument("--calls", type=int, default=2)
    p.add_argument("--step-time", type=float, default=0.005)
    p.add_argument("--batch", type=int, default=16, help="simulated engine's max running batch")
    p.add_argument("--latency", type=float, default=0.1, help="simulated sandbox latency per call (s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--real", action="store_true", help="also run part 2 with SmolLM2-135M")
    p.add_argument("--engines", default="transformers",
                   help="comma-separated: transformers, transformers-no-admit (requests join only at batch boundaries), vllm")
    p.add_argument("--questions", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--smoke", action="store_true",
                   help="a tiny run of both parts (transformers engine) that only checks the benchmark still works")
    args = p.parse_args()
    if args.smoke:
        args.trajectories, args.step_time, args.latency, args.real = 8, 0.001, 0.01, True
        args.engines, args.questions, args.max_tokens = "transformers", 4, 16
    part1(args)
    if args.real:
        part2(args)


if __name__ == "__main__":
    main()
