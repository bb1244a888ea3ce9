"""The whole curation run: ingest → filter → dedup → decontam → output, with one combined report.

Configured by a YAML file (every key optional except inputs), for example:

    inputs:
      - path: data/math_train.jsonl
      - {path: AI-MO/NuminaMath-CoT, split: train, source: numina}
    on_malformed: error          # or skip (counted in the report)
    filter:                      # rule name -> {enabled, params}; see torl.data.filters
      proof: {enabled: true}
      free_text_answer: {max_words: 3}
    dedup: {enabled: true, exact: true, near: true, near_threshold: 0.8}
    decontam: {enabled: true, benchmarks: [math500, aime24, amc23], n: 8, threshold: 0.5}
    output: {format: jsonl, template: null, keep_solution: true}

The combined report's counts add up: rows in = rows out + every removal, keyed `<stage>/<reason>`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from torl.data.records import DataError, write_records
from torl.data.report import StageReport

DEFAULT_BENCHMARKS = ("math500", "aime24", "amc23", "minerva_math", "olympiadbench", "gsm8k")


@dataclass
class DedupConfig:
    enabled: bool = True
    exact: bool = True
    near: bool = True
    near_threshold: float = 0.8
    num_perm: int = 128
    shingle_size: int = 3


@dataclass
class DecontamConfig:
    enabled: bool = True
    benchmarks: list[str] = field(default_factory=lambda: list(DEFAULT_BENCHMARKS))
    n: int = 8
    threshold: float = 0.5
    min_n: int = 3
    benchmark_dir: str | None = None


@dataclass
class OutputConfig:
    format: str = "jsonl"
    template: str | None = None  # e.g. "torl": bake a `prompt` field; None defers to the trainer
    keep_solution: bool = True


@dataclass
class PipelineConfig:
    inputs: list = field(default_factory=list)  # InputSpec, or dicts/strings turned into them
    on_malformed: str = "error"
    filter: dict = field(default_factory=dict)
    filter_enabled: bool = True
    dedup: DedupConfig = field(default_factory=DedupConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


def _section(cls, values: dict | None, name: str):
    values = dict(values or {})
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - allowed
    if unknown:
        raise DataError(f"config section {name!r}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    return cls(**values)


def config_from_dict(data: dict) -> PipelineConfig:
    """Builds a PipelineConfig from parsed YAML, rejecting unknown keys by name."""
    from torl.data.ingest import InputSpec

    data = dict(data or {})
    top = {"inputs", "on_malformed", "filter", "dedup", "decontam", "output"}
    unknown = set(data) - top
    if unknown:
        raise DataError(f"config: unknown key(s) {sorted(unknown)}; allowed: {sorted(top)}")
    inputs = []
    for item in data.get("inputs") or []:
        inputs.append(InputSpec(item) if isinstance(item, str) else _section(InputSpec, item, "inputs"))
    flt = dict(data.get("filter") or {})
    filter_enabled = bool(flt.pop("enabled", True))
    return PipelineConfig(
        inputs=inputs, on_malformed=data.get("on_malformed", "error"), filter=flt,
        filter_enabled=filter_enabled,
        dedup=_section(DedupConfig, data.get("dedup"), "dedup"),
        decontam=_section(DecontamConfig, data.get("decontam"), "decontam"),
        output=_section(OutputConfig, data.get("output"), "output"),
    )


def load_config(path: str | Path) -> PipelineConfig:
    """Reads a pipeline YAML config."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise DataError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise DataError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping of sections at the top level")
    return config_from_dict(data)


def export(records: list[dict], out_path: str | Path, template: str | None = None,
           keep_solution: bool = True) -> tuple[list[dict], StageReport]:
    """The output stage: optional `prompt` from a named template, optional solution drop, write."""
    from torl.data.templates import with_prompts

    start = time.perf_counter()
    out = with_prompts(records, template)
    if not keep_solution:
        out = [{k: v for k, v in r.items() if k != "solution"} for r in out]
    path = write_records(out, out_path)
    report = StageReport("output", n_in=len(records), details={
        "path": str(path), "template": template, "keep_solution": keep_solution})
    return out, report.finish(len(out), time.perf_counter() - start)


def combine(stages: list[StageReport]) -> dict:
    """One report over the stages: totals, removals keyed `<stage>/<reason>`, and the stages."""
    removed = {f"{s.stage}/{reason}": n for s in stages for reason, n in s.removed.items()}
    for before, after in itertools.pairwise(stages):
        if before.n_out != after.n_in:
            raise AssertionError(f"stage {after.stage} got {after.n_in} rows but {before.stage} gave {before.n_out}")
    combined = {"n_in": stages[0].n_in, "n_out": stages[-1].n_out, "removed": removed,
                "warnings": [w for s in stages for w in s.warnings],
                "seconds": round(sum(s.seconds for s in stages), 3), "stages": [s.to_dict() for s in stages]}
    if combined["n_in"] != combined["n_out"] + sum(removed.values()):
        raise AssertionError("pipeline counts do not add up (a bug)")
    return combined


def combined_markdown(combined: dict, stages: list[StageReport]) -> str:
    lines = ["# torl data pipeline", "", *(f"**Warning: {w}**\n" for w in combined["warnings"])]
    lines += ["| stage | in | out | removed |", "|---|---:|---:|---|"]
    for s in stages:
        why = ", ".join(f"{k}: {v}" for k, v in s.removed.items()) or "—"
        lines.append(f"| {s.stage} | {s.n_in} | {s.n_out} | {why} |")
    lines += ["", (f"**{combined['n_in']} in = {combined['n_out']} out + "
                   f"{sum(combined['removed'].values())} removed** ({combined['seconds']:.1f} s)"), ""]
    return "\n".join(lines) + "\n" + "\n".join(s.markdown(level=2) for s in stages)


def run_pipeline(config: PipelineConfig, out_dir: str | Path, progress: bool = False) -> tuple[list[dict], dict]:
    """Runs every enabled stage and writes `train.<format>`, `stats.json`, `report.md` and the
    resolved `config.json` into `out_dir`. Returns (records, combined stats)."""
    from torl.data.decontam import decontaminate
    from torl.data.dedup import deduplicate
    from torl.data.filters import filter_records
    from torl.data.ingest import ingest

    if config.output.format not in ("jsonl", "parquet"):
        raise DataError(f"output format must be jsonl or parquet, got {config.output.format!r}")
    out_dir = Path(out_dir)

    def say(msg: str, stage: StageReport | None = None) -> None:
        if progress:
            print(msg, flush=True)
        if stage is not None:
            stage.print_warnings()  # always: a stage that drops most rows is a mistake until shown otherwise

    stages: list[StageReport] = []
    records, rep = ingest(config.inputs, on_malformed=config.on_malformed)
    stages.append(rep)
    say(f"ingest: {rep.n_in} rows -> {rep.n_out} records ({rep.seconds:.1f} s)", rep)
    if config.filter_enabled:
        records, rep = filter_records(records, config.filter)
        stages.append(rep)
        say(f"filter: {rep.n_in} -> {rep.n_out} {rep.removed} ({rep.seconds:.1f} s)", rep)
    d = config.dedup
    if d.enabled:
        records, rep = deduplicate(records, d.exact, d.near, d.near_threshold, d.num_perm, d.shingle_size)
        stages.append(rep)
        say(f"dedup: {rep.n_in} -> {rep.n_out} {rep.removed} ({rep.seconds:.1f} s)", rep)
    c = config.decontam
    if c.enabled:
        records, rep = decontaminate(records, c.benchmarks, c.n, c.threshold, c.min_n, c.benchmark_dir)
        stages.append(rep)
        say(f"decontam: {rep.n_in} -> {rep.n_out} {rep.removed} ({rep.seconds:.1f} s)", rep)
    o = config.output
    records, rep = export(records, out_dir / f"train.{o.format}", o.template, o.keep_solution)
    stages.append(rep)

    combined = combine(stages)
    combined["config"] = dataclasses.asdict(config)
    (out_dir / "stats.json").write_text(json.dumps(combined, indent=2, ensure_ascii=False) + "\n")
    (out_dir / "report.md").write_text(combined_markdown(combined, stages))
    say(f"wrote {rep.details['path']}: {combined['n_in']} in, {combined['n_out']} out; report in {out_dir / 'report.md'}")
    return records, combined
