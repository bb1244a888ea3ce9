"""Per-stage statistics: what came in, what went out, and why each removed row left.

Every stage returns (records, StageReport). The invariant `n_in == n_out + sum(removed)` is
checked when the report is finished, so a stage that loses rows silently fails loudly instead.
A stage that removes most of its rows (or all of them) is usually fed the wrong shape of data, so
its report then carries a warning naming the main reason; the commands print it as
`torl: warning: ...` on stderr.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torl.data.records import write_records

MAX_EXAMPLES = 5  # per removal reason: enough to judge a rule, small enough to read
WARN_SHARE = 0.5  # a stage removing more than this share of its rows warns


def _preview(text: object, limit: int = 160) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


@dataclass
class StageReport:
    """Counts and examples for one stage. `removed` maps reason (rule name) to rows removed."""

    stage: str
    n_in: int = 0
    n_out: int = 0
    removed: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[dict]] = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    warn_share: float = WARN_SHARE  # LIMR keeps a small share by design: it warns only when nothing is left

    def remove(self, reason: str, record: dict | None = None, /, **why: object) -> None:
        """Counts one removed row under `reason`; keeps the first few as examples."""
        self.removed[reason] = self.removed.get(reason, 0) + 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < MAX_EXAMPLES:
            ex: dict = {}
            if record is not None:
                ex = {
                    "id": record.get("id"),
                    "problem": _preview(record.get("problem", "")),
                    "answer": _preview(record.get("answer", ""), 80),
                }
            ex.update({k: _preview(v) if isinstance(v, str) else v for k, v in why.items()})
            examples.append(ex)

    def finish(self, n_out: int, seconds: float) -> StageReport:
        """Records the output size and checks that every input row is accounted for."""
        self.n_out, self.seconds = n_out, round(seconds, 3)
        lost = self.n_in - self.n_out - sum(self.removed.values())
        if lost:
            raise AssertionError(
                f"stage {self.stage}: {self.n_in} in, {self.n_out} out, "
                f"{sum(self.removed.values())} removed: {lost} rows unaccounted for (a bug)"
            )
        if not self.warnings:  # a stage may already have warned about one input, more precisely
            warning = drop_warning(self.stage, self.n_in, self.removed, self.examples, self.warn_share)
            self.warnings += [warning] if warning else []
        return self

    def print_warnings(self) -> None:
        for warning in self.warnings:
            print(f"torl: warning: {warning}", file=sys.stderr, flush=True)

    def to_dict(self) -> dict:
        return asdict(self)

    def markdown(self, level: int = 2) -> str:
        h = "#" * level
        lines = [f"{h} {self.stage}", ""] + [f"**Warning: {w}**\n" for w in self.warnings]
        lines += [f"- in: {self.n_in}", f"- out: {self.n_out}"]
        for reason, n in self.removed.items():
            lines.append(f"- removed by `{reason}`: {n}")
        lines.append(f"- time: {self.seconds:.2f} s")
        for key, value in self.details.items():
            if not isinstance(value, (dict, list)):
                lines.append(f"- {key}: {value}")
        for key, value in self.details.items():
            if isinstance(value, (dict, list)) and value:
                lines += ["", f"**{key}**", "", "```json", json.dumps(value, indent=1, ensure_ascii=False)[:4000], "```"]
        for reason, examples in self.examples.items():
            lines += ["", f"{h}# examples removed by `{reason}`", ""]
            for ex in examples:
                parts = [f"`{ex['id']}`" if ex.get("id") else ""]
                parts += [f"{k}: {v}" for k, v in ex.items() if k != "id"]
                lines.append("- " + " — ".join(p for p in parts if p))
        return "\n".join(lines) + "\n"


def drop_warning(what: str, n_in: int, removed: dict[str, int], examples: dict[str, list[dict]],
                 share: float = WARN_SHARE) -> str | None:
    """One line when `removed` holds more than `share` of `n_in` rows (or all of them): how many,
    each reason's count, and why the first row of the main reason went."""
    total = sum(removed.values())
    if not n_in or not total or (total <= share * n_in and total < n_in):
        return None
    reasons = sorted(removed.items(), key=lambda kv: -kv[1])
    main = reasons[0][0]
    first = next(iter(examples.get(main) or []), {})
    why = "; ".join(f"{k}: {v}" for k, v in first.items() if k not in ("id", "problem", "answer"))
    counts = ", ".join(f"{reason} {n}" for reason, n in reasons)
    amount = f"all {n_in} row{'s' if n_in != 1 else ''}" if total == n_in else f"{total} of {n_in} rows ({100 * total / n_in:.0f}%)"
    return f"{what} removed {amount}: {counts}" + (f" (first {main}: {why})" if why else "")


def write_stage_outputs(
    records: list[dict], report: StageReport, out_dir: str | Path, fmt: str = "jsonl"
) -> Path:
    """Writes `data.<fmt>`, `stats.json` and `report.md` into `out_dir`; returns the data path."""
    out_dir = Path(out_dir)
    data_path = write_records(records, out_dir / f"data.{fmt}")
    (out_dir / "stats.json").write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
    (out_dir / "report.md").write_text(f"# torl data {report.stage}\n\n" + report.markdown())
    return data_path
