"""The eval output dir's trajectory log: appended as samples finish, so an interrupted eval resumes.

One JSON row per finished sample in ``trajectories.jsonl``; a sample is keyed by
``(benchmark, question_id, sample)``. A row that hit a sandbox failure (ours) does not count as done:
the next run retries it, and its newer row supersedes the old one. A half-written last line (the
process was killed mid-write) is cut off on open. `save_ids` (rows with their token ids) is not a
fingerprint setting: a resumed eval's earlier rows keep the form they were written in, and
`torl sft` reads either.
"""

from __future__ import annotations

import json
from pathlib import Path

from torl.errors import UserError
from torl.run_layout import EvalLayout

Key = tuple[str, str, int]

# Settings that change what a sample means: resuming with different ones would mix two evals. `task`
# is the whole `TaskSpec.to_dict()` (template, C, sandbox limits, observation length, reward...), so
# a field added to the task spec is covered without being listed here.
FINGERPRINT_KEYS = ("model", "temperature", "top_p", "seed", "task")


def row_key(row: dict) -> Key:
    return row["benchmark"], str(row["question_id"]), int(row["sample"])


def fingerprint_changes(old: dict, new: dict) -> list[str]:
    """`key: old -> new` for every fingerprint setting that differs; task fields one by one (`task.max_tool_calls: 1 -> 2`)."""
    changes = []
    for key in FINGERPRINT_KEYS:
        before, after = old.get(key), new.get(key)
        if isinstance(before, dict) and isinstance(after, dict):
            changes += [f"{key}.{f}: {before.get(f)!r} -> {after.get(f)!r}"
                        for f in sorted(set(before) | set(after)) if before.get(f) != after.get(f)]
        elif before != after:  # also an old eval dir that recorded no task spec: we cannot tell, so refuse
            changes.append(f"{key}: {before!r} -> {after!r}")
    return changes


class TrajectoryLog:
    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        layout = EvalLayout(out_dir)
        self.path = layout.trajectories
        self.config_path = layout.config
        self._file = None

    def open(self, settings: dict) -> None:
        """Create the dir or check it holds an eval with the same settings; repair a torn last line."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.config_path.exists():
            as_stored = json.loads(json.dumps(settings))  # tuples become lists, as in the file
            changes = fingerprint_changes(json.loads(self.config_path.read_text()), as_stored)
            if changes:
                raise UserError(f"{self.out_dir} holds an eval with other settings ({', '.join(changes)}); "
                                "use another --out")
        self.config_path.write_text(json.dumps(settings, indent=2) + "\n")
        self._repair()
        self._file = self.path.open("a", encoding="utf-8")

    def _repair(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if not data or data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        self.path.write_bytes(data[:cut])  # the torn row is redone

    def rows(self) -> list[dict]:
        """The latest row of every sample, in file order of first appearance."""
        latest: dict[Key, dict] = {}
        if self.path.exists():
            with self.path.open(encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        raise UserError(f"{self.path}:{n} is not valid JSON; delete that line to resume") from None
                    latest[row_key(row)] = row
        return list(latest.values())

    def done(self) -> set[Key]:
        """Samples that need no rerun (finished without a sandbox failure)."""
        return {row_key(r) for r in self.rows() if not r["trajectory"].get("sandbox_error")}

    def append(self, row: dict) -> None:
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
