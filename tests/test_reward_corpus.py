"""Verifier accuracy on two labelled corpora, kept apart: the project's own
(tests/data/verifier_corpus.jsonl) and the cases of Math-Verify's own test suite
(tests/data/math_verify_suite.jsonl, extracted from huggingface/Math-Verify by
tests/data/extract_math_verify_cases.py). The floors are what the verifier achieves today:
any regression fails."""

import importlib.util
import re
from pathlib import Path

from torl.reward.grader_eval import evaluate, evaluate_suite, load_corpus

DATA = Path(__file__).parent / "data"
OWN = DATA / "verifier_corpus.jsonl"
SUITE = DATA / "math_verify_suite.jsonl"
SUITE_FIELDS = ("gold", "prediction", "expected", "harness", "settings", "source", "upstream_commit")

# Measured floors (correct cases). In-contract count is pinned too, so a floor cannot be met by
# moving cases out of the contract.
OWN_TORL_CORRECT = 225
SUITE_IN_CONTRACT = 211
SUITE_TORL_CORRECT = 207


def _extractor():
    spec = importlib.util.spec_from_file_location("extract_cases", DATA / "extract_math_verify_cases.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_own_corpus_is_big_and_balanced():
    rows = load_corpus(OWN)
    assert len(rows) >= 200
    labels = [r["equivalent"] for r in rows]
    assert labels.count(True) >= 50 and labels.count(False) >= 50
    assert len({r["type"] for r in rows}) >= 15


def test_suite_cases_carry_their_provenance():
    cases = load_corpus(SUITE, SUITE_FIELDS)
    assert len(cases) == 269
    for c in cases:
        path, line = c["id"].rsplit(":", 1)
        assert re.fullmatch(r"[0-9a-f]{40}", c["upstream_commit"])
        assert c["source"] == f"https://github.com/huggingface/Math-Verify/blob/{c['upstream_commit']}/{path}#L{line}"
    assert {c["expected"] for c in cases} == {True, False}


def test_extractor_reads_cases_settings_and_lines():
    source = '''
import pytest
def compare_strings(gold, pred, match_types=["latex", "expr"], precision=6, strict=True):
    pass

@pytest.mark.parametrize(
    "gold,pred,expected,precision",
    [
        # a comment about the case
        ("$1$", "$1.0$", 1, 2),
        ("$2$", r"\\boxed{3}", 0, 6),
    ],
)
def test_x(gold, pred, expected, precision):
    assert compare_strings(gold, pred, match_types=["latex"], precision=precision) == expected

@pytest.mark.parametrize("pred,expected", [("A", ["a"])])
def test_not_a_pair(pred, expected):
    pass
'''
    ex = _extractor()
    rows, skipped = ex.cases_of_file("tests/t.py", source, ex._harness_defaults(ex.ast.parse(source)), "c" * 40)
    assert [(r["gold"], r["prediction"], r["expected"]) for r in rows] == [("$1$", "$1.0$", True),
                                                                         ("$2$", "\\boxed{3}", False)]
    assert rows[0]["settings"] == {"match_types": ["latex"], "precision": 2, "strict": True}
    assert rows[1]["settings"]["precision"] == 6
    assert rows[0]["id"] == "tests/t.py:10" and rows[0]["comment"] == "a comment about the case"
    assert source.splitlines()[9].strip().startswith('("$1$"')
    assert len(skipped) == 1 and "test_not_a_pair" in skipped[0]


def test_accuracy_on_both_corpora():
    own = evaluate(load_corpus(OWN))
    suite = evaluate_suite(load_corpus(SUITE, SUITE_FIELDS))
    n_own = len(load_corpus(OWN))
    print()
    for name, r in own.items():
        print(f"own corpus      {name:>20}: {r['accuracy']:.3f} ({n_own - len(r['mistakes'])}/{n_own})")
    n_in, n_all = suite["in_contract"], suite["cases"]
    print(f"Math-Verify suite {'torl':>18}: {suite['torl']['accuracy']:.3f} ({suite['torl']['correct']}/{n_in} "
          "in torl's contract)")
    print(f"Math-Verify suite {'raw math-verify':>18}: {suite['math_verify_in_contract']['accuracy']:.3f} "
          f"({suite['math_verify_in_contract']['correct']}/{n_in} same cases), "
          f"{suite['math_verify_all']['correct']}/{n_all} all cases")
    for c in suite["torl"]["mistakes"]:
        print(f"  torl misses {c['id']} (expected {c['expected']}): {c['gold'][:50]!r} vs {c['prediction'][-60:]!r}")

    torl = own["torl"]
    assert n_own - len(torl["mistakes"]) >= OWN_TORL_CORRECT, [(m["gold"], m["response"][-60:])
                                                               for m in torl["mistakes"]]
    assert torl["accuracy"] > own["math_verify_default"]["accuracy"]
    assert torl["accuracy"] > own["string_match"]["accuracy"]
    # The extraction is faithful: math-verify run as the upstream tests run it gets every label.
    assert suite["math_verify_all"]["correct"] == n_all
    assert n_in == SUITE_IN_CONTRACT, suite["outside_contract"]
    assert suite["torl"]["correct"] >= SUITE_TORL_CORRECT
