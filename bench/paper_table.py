"""ToRL's comparison in miniature: base, RL without tools, SFT-TIR, ToRL, SFT→ToRL on the same questions.

    python bench/paper_table.py --smoke        # every stage, tiny sizes: does it all run? (numbers mean nothing)
    python bench/paper_table.py --out DIR      # the miniature (default DIR: runs/paper-table-<timestamp>)

Five rows, one run, SmolLM2-135M with the demo's few-shot template, the same training questions
and held-out sets for every row. The training questions are a mix (MIX, seed 0, some held out) so
that the rows can differ: one-digit sums and differences the model answers in its head (`mental`:
code adds nothing but tokens), products of a 3-digit and a 2-digit number it cannot do without code
(`arithmetic`), and binomial coefficients `$\\binom{n}{k}$` whose natural first program
(`binom(n, k)`) fails, so recovering after a failed call pays (`binomial`). Tool budget C = 2 (one
retry). The rows:

- base: the model untrained (C = 2 available);
- RL, C = 0: `torl train` on the mix without tools (evaluated at C = 0, its own spec);
- SFT-TIR: `torl sft` on expert TIR data in one fixed pattern -- always code, one call
  (torl.sft.expert: `print(a + b)`, `print(a * b)`, `print(math.comb(n, k))`);
- ToRL: `torl train` on the mix at C = 2 from the base model;
- SFT→ToRL: the same RL run started from the SFT-TIR run (`--model SFT_RUN_DIR`).

RL rows use configs/demo-cpu.yaml with MIX and RL_SETTINGS; SFT uses configs/sft-demo.yaml with MIX.
Each row is evaluated greedily under its own run's task spec on three sets, by question family:
(a) in-distribution: held-out questions of each training kind; (b) shifted: products phrased
otherwise, a product plus or minus a third number, modular powers, factorial quotients -- all need
code, none was trained on; (c) general: easy questions a model answers in its head (other phrasings), and a slice
of GSM8K (the copy shipped in torl.bundled_data). Per row: accuracy and code ratio per family,
behaviour metrics (`torl.metrics.behaviour`: error recovery, cross-checks, code on the head
questions), tokens per answer, wall time (training + evaluation), all measured here.
Greedy decoding shows what a row does; it cannot show what RL could find. So each row is also
sampled (K per question at the RL rows' temperature) on the in-distribution questions: how often a
program fails, how often a failed program is followed by another call (the retry RL would have to
reinforce), and how often that retry succeeds.
The table is written to OUT/table.json and OUT/table.md as each row finishes, so a cut-short run
keeps its finished rows; run again with the same --out and finished rows and trainings are reused.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ROWS = ("base", "RL C=0", "SFT-TIR", "ToRL", "SFT→ToRL")
ORDER = ("base", "SFT-TIR", "ToRL", "SFT→ToRL", "RL C=0")  # run order: the SFT-vs-RL rows first
# The training questions, the same for every row (torl train and torl sft draw them alike).
KINDS = {"mental": "head sums (held-out)", "arithmetic": "products (held-out)", "binomial": "binomials (held-out)"}
MIX = {"train_tasks": list(KINDS), "train_task_difficulty": 2, "train_task_count": 192, "eval_holdout": 48,
       "max_tool_calls": 2}
RESPONSE_TOKENS = 128  # room for two calls and their outputs (the demo's 96 is for one)
# GRPO for the RL rows, over configs/demo-cpu.yaml: 4 questions x 4 samples per step (a mix needs more
# questions per step than one task), no dynamic sampling (its extra rounds would double a step's cost).
RL_SETTINGS = {"num_generations": 4, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 2,
               "dynamic_sampling": False, "max_response_tokens": RESPONSE_TOKENS}
RL_STEPS = 5
SMOKE = {"train_task_count": 24, "eval_holdout": 6}
SAMPLES = 4  # sampled responses per in-distribution question and row (smoke: 1)
SETS = {"in-distribution": tuple(KINDS.values()),
        "shifted": ("products, reworded", "product ± c", "modular powers", "factorials"),
        "general": ("easy (head)", "gsm8k")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: every stage runs, the numbers mean nothing")
    ap.add_argument("--out", default=None, help="default: runs/paper-table-<timestamp>")
    ap.add_argument("--per-family", type=int, default=None, help="questions per evaluated family (default 4; smoke 1)")
    ap.add_argument("--rl-steps", type=int, default=None, help=f"GRPO steps per RL row (default {RL_STEPS}; smoke 1)")
    ap.add_argument("--sft-steps", type=int, default=None, help="SFT steps (default: configs/sft-demo.yaml's)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for every stage (default: the recipes' 2); 1 is faster on an oversubscribed "
                         "machine, where a second thread mostly waits for the first")
    ap.add_argument("--samples", type=int, default=None,
                    help=f"sampled responses per in-distribution question and row (default {SAMPLES}; smoke 1; 0: none)")
    ap.add_argument("--rows", default=",".join(ROWS), help="which rows, comma-separated")
    ap.add_argument("--train-only", default="", help="rows to train (or reuse) but not evaluate, comma-separated: "
                                                     "e.g. SFT-TIR when another invocation evaluates it")
    args = ap.parse_args()
    out = Path(args.out or REPO / "runs" / f"paper-table-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    per_family = args.per_family or (1 if args.smoke else 4)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = set(wanted) - set(ROWS)
    if unknown:
        ap.error(f"unknown rows {sorted(unknown)}; rows are {', '.join(ROWS)}")

    from torl.train.config import parse_train_args, task_spec
    from torl.train.data import load_questions

    torl_cfg, grpo_cfg = parse_train_args(["--config", str(rl_recipe(args.smoke))])
    train, heldout = load_questions(torl_cfg, seed=grpo_cfg.seed)
    demo_task = task_spec(torl_cfg)
    samples = args.samples if args.samples is not None else 1 if args.smoke else SAMPLES
    sets = question_sets(train, heldout, per_family)
    print(f"paper table -> {out}\nfamilies: " + ", ".join(f"{k} {len(v)}" for k, v in sets.items()), flush=True)

    table = out / "table.json"  # rows an earlier invocation with this --out finished are kept
    results: dict[str, dict] = json.loads(table.read_text()) if table.is_file() else {}
    runs: dict[str, Path] = {}
    for row in [r for r in ORDER if r in wanted]:
        started = time.time()
        try:
            model, task = train_row(row, out, runs, args, demo_task)
        except RowSkipped as e:
            print(f"{row}: skipped ({e})", flush=True)
            continue
        trained_s = time.time() - started
        if row in args.train_only.split(","):
            continue
        name = row.replace(" ", "_").replace("→", "-")
        results[row] = evaluate(model, task, sets, out / "eval" / name, max_tokens=48 if args.smoke else None)
        if samples:
            in_distribution = {f: sets[f] for f in SETS["in-distribution"]}
            results[row]["sampled"] = evaluate(model, task, in_distribution, out / "eval-sampled" / name,
                                               max_tokens=48 if args.smoke else None, samples=samples,
                                               temperature=grpo_cfg.temperature)
        results[row]["train_s"] = trained_s
        results[row]["wall_s"] = time.time() - started
        results[row]["model"] = str(model)
        write_tables(out, results, sets)
        print(f"\n{row} done in {results[row]['wall_s'] / 60:.1f} min", flush=True)
        print((out / "table.md").read_text(), flush=True)
    return 0


class RowSkipped(RuntimeError):
    pass


def rl_recipe(smoke: bool) -> Path:
    """configs/demo-cpu.yaml on the mix (MIX, RL_SETTINGS), as a temporary recipe file."""
    return _recipe("demo-cpu.yaml", {"eval_before_after": False, **MIX, **RL_SETTINGS, **(SMOKE if smoke else {})})


def sft_recipe(smoke: bool) -> Path:
    """configs/sft-demo.yaml on the same training questions and task spec as the RL rows."""
    return _recipe("sft-demo.yaml", {**MIX, "max_response_tokens": RESPONSE_TOKENS, **(SMOKE if smoke else {})})


def _recipe(name: str, changes: dict) -> Path:
    recipe = yaml.safe_load((REPO / "configs" / name).read_text())
    recipe.update(changes)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(recipe, f)
    return Path(f.name)


def train_row(row: str, out: Path, runs: dict[str, Path], args, demo_task):
    """(model to evaluate, task spec to evaluate it under) for `row`, training it first when it is trained."""
    from torl.tir.task import TaskSpec, run_model

    if row == "base":
        from torl.engines.models import resolve_model

        return resolve_model("smollm2-135m"), demo_task
    if row == "SFT-TIR":
        from torl.sft.config import parse_sft_args
        from torl.sft.trainer import run_sft

        run = out / "sft"
        if (run / "summary.json").is_file():  # finished in an earlier invocation with this --out
            runs[row] = run
            return run_model(run), TaskSpec.load(run)
        extra = ["--run_dir", str(run)] + (["--torch_threads", str(args.threads)] if args.threads else [])
        steps = args.sft_steps or (1 if args.smoke else None)
        if steps:
            extra += ["--max_steps", str(steps), "--save_steps", str(steps)]
        if args.smoke:
            extra += ["--per_device_train_batch_size", "2"]
        if run_sft(*parse_sft_args(["--config", str(sft_recipe(args.smoke)), *extra])) != 0:
            raise RowSkipped("torl sft failed")
        runs[row] = run
        return run_model(run), TaskSpec.load(run)
    from torl.train.config import parse_train_args
    from torl.train.trainer import run_training

    steps = args.rl_steps or (1 if args.smoke else RL_STEPS)
    extra = ["--max_steps", str(steps), "--save_steps", str(steps)]
    if args.threads:
        extra += ["--torch_threads", str(args.threads)]
    if args.smoke:  # one group of 4 short samples
        extra += ["--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1",
                  "--max_response_tokens", "48"]
    if row == "RL C=0":
        extra += ["--max_tool_calls", "0"]
    if row == "SFT→ToRL":
        if "SFT-TIR" not in runs:
            raise RowSkipped("needs the SFT-TIR row's run")
        extra += ["--model", str(runs["SFT-TIR"])]
    run = out / {"RL C=0": "rl-c0", "ToRL": "torl", "SFT→ToRL": "sft-torl"}[row]
    if (run / "summary.json").is_file():  # finished in an earlier invocation with this --out
        runs[row] = run
        return run_model(run), TaskSpec.load(run)
    torl_cfg, grpo_cfg = parse_train_args(["--config", str(rl_recipe(args.smoke)), "--run_dir", str(run), *extra])
    if run_training(torl_cfg, grpo_cfg) != 0:
        raise RowSkipped("torl train failed")
    runs[row] = run
    return run_model(run), TaskSpec.load(run)


# --- the evaluation sets -------------------------------------------------------------------------

def question_sets(train: list[dict], heldout: list[dict], n: int) -> dict[str, list[dict]]:
    from torl.data.synthetic import generate_tasks
    from torl.question import make_question

    rng = random.Random(1234)
    seen = {q["problem"] for q in train + heldout}
    reworded = []
    phrasings = ("What is {a} multiplied by {b}?", "Multiply {a} by {b}.",
                 "A warehouse has {b} shelves with {a} boxes on each shelf. How many boxes are there?",
                 "Find the product of {a} and {b}.")
    while len(reworded) < n:
        a, b = rng.randint(100, 999), rng.randint(10, 99)
        text = phrasings[len(reworded) % len(phrasings)].format(a=a, b=b)
        if f"Compute ${a} \\times {b}$." not in seen:
            reworded.append(make_question(f"reworded-{len(reworded)}", text, a * b))
    shifted_sums = [make_question(r["id"], r["problem"], r["answer"])
                    for r in generate_tasks(["arithmetic"], n, seed=1, difficulty=3)]
    factorials = [make_question(r["id"], r["problem"], r["answer"])
                  for r in generate_tasks(["factorial"], n, seed=1, difficulty=2)]
    powers = [make_question(r["id"], r["problem"], r["answer"]) for r in generate_tasks(["modexp"], n, seed=1, difficulty=1)]
    easy = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            a, b = rng.randint(1, 9), rng.randint(1, 9)
            easy.append(make_question(f"easy-{i}", f"What is the sum of {a} and {b}?", a + b))
        elif kind == 1:
            a = rng.randint(5, 40)
            easy.append(make_question(f"easy-{i}", f"What number comes right after {a}?", a + 1))
        else:
            a, b = rng.randint(6, 12), rng.randint(1, 5)
            easy.append(make_question(f"easy-{i}", f"Tom has {a} apples and eats {b} of them. How many apples does "
                                                   "he have left?", a - b))
    sets = {family: [q for q in heldout if q["question_id"].startswith(f"synthetic-{kind}-")][:n]
            for kind, family in KINDS.items()}
    sets.update({"products, reworded": reworded, "product ± c": shifted_sums, "modular powers": powers,
                 "factorials": factorials, "easy (head)": easy})
    try:
        from torl.eval.benchmarks import load_benchmark

        rows = load_benchmark("gsm8k", limit=n)
        sets["gsm8k"] = [make_question(f"gsm8k-{r['question_id']}", r["problem"], r["gold"]) for r in rows]
    except Exception as e:  # noqa: BLE001 - no local copy (a user's clone) or no hub access: say so, go on
        print(f"gsm8k left out: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
    return sets


# --- evaluation ----------------------------------------------------------------------------------

def evaluate(model_path, task, sets: dict[str, list[dict]], out_dir: Path, max_tokens: int | None = None,
             samples: int = 1, temperature: float = 0.0) -> dict:
    """`samples` rollouts of every question under `task` (greedy by default); behaviour metrics per family
    and overall."""
    from torl.background_loop import BackgroundLoop
    from torl.engines.transformers_engine import TransformersEngine
    from torl.metrics.behaviour import behaviour_metrics
    from torl.reward import score
    from torl.tir.loop import rollout_many
    from torl.tir.trajectory import answer_text

    started = time.time()
    engine = TransformersEngine(str(model_path))
    loop = BackgroundLoop("paper-table")
    sandbox = loop.run(_sandbox(task)) if task.max_tool_calls > 0 else None
    try:
        template = task.prompt_template()
        questions = [(family, q) for family, qs in sets.items() for q in qs for _ in range(samples)]
        prompts = [template.encode(q["problem"], engine.tokenizer) for _, q in questions]
        config = task.rollout_config(temperature=temperature, seed=0, logprobs=False, max_response_tokens=max_tokens)
        trajectories = [t.to_dict() for t in loop.run(rollout_many(engine, sandbox, prompts, config))]
    finally:
        for closer in (engine, sandbox):
            if closer is not None:
                loop.run(closer.aclose())
        loop.close()
    correct = [None if t["sandbox_error"] else bool(score(answer_text(t), q["gold"], scheme=task.reward_scheme,
                                                         calls=t["calls"]).correct)
               for (_, q), t in zip(questions, trajectories, strict=True)]
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "trajectories.jsonl").open("w") as f:
        for (family, q), t, ok in zip(questions, trajectories, correct, strict=True):
            f.write(json.dumps({"family": family, **q, "correct": ok, "text": t["text"],
                                "model_tokens": t["model_tokens"], "calls": len(t["calls"])}) + "\n")
    families = {}
    for family in sets:
        idx = [i for i, (f, _) in enumerate(questions) if f == family]
        families[family] = behaviour_metrics([trajectories[i] for i in idx], [correct[i] for i in idx])
    return {"families": families, "all": behaviour_metrics(trajectories, correct), "eval_s": time.time() - started,
            "max_tool_calls": task.max_tool_calls, "samples": samples, "temperature": temperature}


async def _sandbox(task):
    from torl.sandbox import LocalSandbox, SandboxConfig

    return LocalSandbox(SandboxConfig(timeout_s=task.exec_timeout_s, memory_mb=task.exec_memory_mb))


# --- output --------------------------------------------------------------------------------------

def _f(v, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def write_tables(out: Path, results: dict, sets: dict) -> None:
    (out / "table.json").write_text(json.dumps(results, indent=2) + "\n")
    families = [f for group in SETS.values() for f in group if f in sets]
    lines = ["accuracy / code ratio, greedy, each row under its own task spec (C in brackets)", "",
             "| row | " + " | ".join(f"{f} ({len(sets[f])})" for f in families) + " |",
             "|---|" + "---|" * len(families)]
    for row, r in results.items():
        cells = [f"{_f(r['families'][f]['accuracy'])} / {_f(r['families'][f]['code_ratio'])}" for f in families]
        lines.append(f"| {row} [C={r['max_tool_calls']}] | " + " | ".join(cells) + " |")
    lines += ["", ("| row | error recovery | cross-check | code on easy | calls/answer | tokens/answer | train min | "
                  "eval min |"), "|---|---|---|---|---|---|---|---|"]
    for row, r in results.items():
        a = r["all"]
        easy = r["families"].get("easy (head)", {})
        lines.append(f"| {row} | {_f(a['error_recovery_ratio'])} ({a['error_responses']}) | "
                     f"{_f(a['cross_check_ratio'])} | {_f(easy.get('code_ratio'))} | {_f(a['calls_per_response'])} | "
                     f"{_f(a['model_tokens'], 1)} | {r['train_s'] / 60:.1f} | {r['eval_s'] / 60:.1f} |")
    sampled = {row: r["sampled"] for row, r in results.items() if r.get("sampled")}
    if sampled:
        first = next(iter(sampled.values()))
        caption = (f"sampled: {first['samples']} responses per in-distribution question at T = {first['temperature']} "
                   "(what RL can reinforce); failed: calls whose program failed; retry: a failed call followed by "
                   "another call; recovered: that call ran")
        header = ("| row | accuracy | code ratio | failed calls | responses with a failed call | retry | recovered | "
                  "correct after a failure |")
        lines += ["", caption, "", header, "|---|---|---|---|---|---|---|---|"]
        for row, r in sampled.items():
            a = r["all"]
            failed = None if a["pass_ratio"] is None else 1 - a["pass_ratio"]
            lines.append(f"| {row} | {_f(a['accuracy'])} | {_f(a['code_ratio'])} | {_f(failed)} ({a['executed_calls']}) "
                         f"| {a['error_responses']} | {_f(a['error_retry_ratio'])} | {_f(a['error_recovery_ratio'])} | "
                         f"{_f(a['error_correct_ratio'])} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
