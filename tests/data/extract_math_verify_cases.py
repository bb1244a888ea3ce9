"""Extract the labelled equivalence cases of Math-Verify's own test suite into a JSONL corpus.

    python tests/data/extract_math_verify_cases.py --git-dir /path/to/Math-Verify.git [--commit REV]

Reads `tests/*.py` of huggingface/Math-Verify at one commit (with `git show`, no checkout
needed), finds every `@pytest.mark.parametrize` whose argument names include gold, pred and an
expected verdict, and writes one row per case to tests/data/math_verify_suite.jsonl:
gold, prediction, expected, the settings the upstream test passes to its harness (match types,
float precision, strict, allow_set_relation_comp), the file:line of the case, the comment lines
right above it, and the upstream commit. Only data is taken: values are read with
`ast.literal_eval` (plus `math` for the one f-string case), no upstream code is copied or run.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import subprocess
from pathlib import Path

UPSTREAM = "huggingface/Math-Verify"
OUT = Path(__file__).with_name("math_verify_suite.jsonl")
HARNESS_FUNCTIONS = {"compare_strings": "compare_strings", "verify": "parse_verify"}
EXPECTED_NAMES = ("expected", "result")


def _git(git_dir: str, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", git_dir, *args], check=True, capture_output=True,
                          text=True).stdout


def _value(node: ast.expr):
    try:
        return ast.literal_eval(node)
    except ValueError:
        # One upstream case is f"{math.sqrt(17):.15f}": evaluate it with `math` and nothing else.
        names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        if names <= {"math"}:
            return eval(compile(ast.Expression(node), "<case>", "eval"), {"__builtins__": {}, "math": math})
        raise


def _harness_defaults(tree: ast.Module) -> dict:
    """Keyword defaults of the suite's `compare_strings` helper (defined in tests/test_all.py)."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "compare_strings":
            args = node.args.args[-len(node.args.defaults):]
            return {a.arg: _value(d) for a, d in zip(args, node.args.defaults)}
    return {}


def _harness_call(func: ast.FunctionDef) -> tuple[str, dict[str, ast.expr]] | None:
    """(harness name, keyword nodes) of the assert's call to compare_strings / verify."""
    for node in ast.walk(func):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in HARNESS_FUNCTIONS:
            return HARNESS_FUNCTIONS[node.func.id], {k.arg: k.value for k in node.keywords if k.arg}
    return None


def _comment_above(lines: list[str], lineno: int) -> str:
    """The contiguous `#` comment lines right above source line `lineno` (1-based)."""
    out = []
    i = lineno - 2
    while i >= 0 and lines[i].strip().startswith("#"):
        out.append(lines[i].strip().lstrip("#").strip())
        i -= 1
    text = " / ".join(reversed(out))
    return text if len(text) <= 200 else text[:200] + "..."  # some comments are commented-out cases


def cases_of_file(path: str, source: str, defaults: dict, commit: str) -> tuple[list[dict], list[str]]:
    tree = ast.parse(source)
    lines = source.splitlines()
    rows, skipped = [], []
    for func in tree.body:
        if not isinstance(func, ast.FunctionDef):
            continue
        for deco in func.decorator_list:
            if not (isinstance(deco, ast.Call) and ast.unparse(deco.func) == "pytest.mark.parametrize"):
                continue
            names = [n.strip() for n in _value(deco.args[0]).split(",")]
            expected_name = next((n for n in EXPECTED_NAMES if n in names), None)
            call = _harness_call(func)
            if not {"gold", "pred"} <= set(names) or expected_name is None or call is None:
                skipped.append(f"{path}::{func.name} (parameters {names}: not gold/pred/verdict cases)")
                continue
            harness, keywords = call
            for element in deco.args[1].elts:
                values = dict(zip(names, (_value(e) for e in element.elts)))
                settings = dict(defaults) if harness == "compare_strings" else {}
                for key, node in keywords.items():
                    is_param = isinstance(node, ast.Name) and node.id in values
                    settings[key] = values[node.id] if is_param else _value(node)
                rows.append({
                    "id": f"{path}:{element.lineno}",
                    "gold": values["gold"],
                    "prediction": values["pred"],
                    "expected": bool(values[expected_name]),
                    "harness": harness,
                    "settings": settings,
                    "test": func.name,
                    "source": f"https://github.com/{UPSTREAM}/blob/{commit}/{path}#L{element.lineno}",
                    "comment": _comment_above(lines, element.lineno),
                    "upstream_commit": commit,
                })
    return rows, skipped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--git-dir", required=True, help="a clone (or bare mirror) of huggingface/Math-Verify")
    ap.add_argument("--commit", default="HEAD")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()

    commit = _git(args.git_dir, "rev-parse", args.commit).strip()
    files = sorted(p for p in _git(args.git_dir, "ls-tree", "-r", "--name-only", commit, "tests/").split()
                   if p.endswith(".py"))
    sources = {p: _git(args.git_dir, "show", f"{commit}:{p}") for p in files}
    defaults = _harness_defaults(ast.parse(sources.get("tests/test_all.py", "")))
    rows, skipped = [], []
    for path, source in sources.items():
        file_rows, file_skipped = cases_of_file(path, source, defaults, commit)
        rows += file_rows
        skipped += file_skipped
    with open(args.out, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    print(f"{len(rows)} cases from {UPSTREAM}@{commit[:12]} -> {args.out}")
    for s in skipped:
        print("skipped:", s)


if __name__ == "__main__":
    main()
