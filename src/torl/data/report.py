"""Per-stage statistics: what came in, what went out, and why each removed row left.

Every stage returns (records, StageReport). The invariant `n_in == n_out + sum(removed)` is
checked when the report is finished, so a stage that loses rows silently fails loudly instead.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torl.data.records import write_records

MAX_EXAMPLES = 5  # per removal reason: enough to judge a rule, small enough to read


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
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def markdown(self, level: int = 2) -> str:
        h = "#" * level
        lines = [f"{h} {self.stage}", "", f"- in: {self.n_in}", f"- out: {self.n_out}"]
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


def write_stage_outputs(
    records: list[dict], report: StageReport, out_dir: str | Path, fmt: str = "jsonl"
) -> Path:
    """Writes `data.<fmt>`, `stats.json` and `report.md` into `out_dir`; returns the data path."""
    out_dir = Path(out_dir)
    data_path = write_records(records, out_dir / f"data.{fmt}")
    (out_dir / "stats.json").write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
    (out_dir / "report.md").write_text(f"# torl data {report.stage}\n\n" + report.markdown())
    return data_path
