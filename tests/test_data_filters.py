"""Filter rules: what each removes and keeps, configuration, and counts that add up."""

import pytest

from torl.data.filters import (
    filter_records,
    free_text_answer,
    missing_fields,
    multi_part,
    multiple_choice,
    proof,
    unparseable_answer,
)
from torl.data.records import DataError


def rec(problem, answer="1", id_="r"):
    return {"id": id_, "problem": problem, "answer": answer, "source": "t"}


@pytest.mark.parametrize("problem", [
    "Prove that there are infinitely many primes.",
    "Show that $x^2 + 1 > 0$ for every real $x$.",
    "Let $n$ be odd. Show that $8$ divides $n^2 - 1$.",
    "Find all $x$ with $x^2 = x$, and show that there are no others.",
    "Demonstrate that the sequence converges.",
    "Give a proof that $\\sqrt{2}$ is irrational.",
])
def test_proof_questions_are_caught(problem):
    assert proof(rec(problem))


@pytest.mark.parametrize("problem", [
    "Determine the number of ways to arrange the letters of the word PROOF.",
    "In what year will the census show that the number of wrens is below 10?",
    "Compute $\\binom{10}{3}$.",
])
def test_proof_rule_keeps_computational_questions(problem):
    assert proof(rec(problem)) is None


@pytest.mark.parametrize("answer", ["B", "\\text{(C)}", "(A)", "\\textbf{(E)}", "$D$", "A, C", "(b)"])
def test_letter_golds_are_multiple_choice(answer):
    assert multiple_choice(rec("Which is largest? (A) 1 (B) 2", answer))


@pytest.mark.parametrize("answer", ["2", "x", "\\frac{1}{2}", "AB", "F", "\\text{Sunday}", "b"])
def test_values_are_not_multiple_choice(answer):
    assert multiple_choice(rec("q", answer)) is None


@pytest.mark.parametrize("problem", [
    "Let $a,b>0$. (1) Find the minimum of $a+b$. (2) Find the maximum of $ab$.",
    "(a) Compute $f(2)$. (b) Compute $f(3)$.",
    "Given $a_n$. (I) Find the general term; (II) Find the sum $S_n$.",
    "A bag has balls. ① How many are red? ② How many are blue?",
])
def test_multi_part_questions_are_caught(problem):
    assert multi_part(rec(problem))


@pytest.mark.parametrize("problem", [
    # numbered conditions followed by one question (MATH style) are one question
    ("Find the largest integer $n$ satisfying the following conditions:\n(i) $n^2$ is the difference of "
     "two consecutive cubes;\n(ii) $2n + 79$ is a perfect square."),
    ("The graph has these properties: (1) The maximum value of $y$ is 5, which occurs at $x = 3$. "
     "(2) The graph passes through $(0,-13)$. If it passes through $(4,m)$, what is $m$?"),
    "Compute $f(a) + f(b)$ where $f(x) = x^2$.",
])
def test_single_questions_with_enumerations_are_kept(problem):
    assert multi_part(rec(problem)) is None


@pytest.mark.parametrize("answer", ["proof", "See proof.", "\\text{see solution}", "notfound",
                                    "The function is increasing on the whole interval"])
def test_free_text_answers(answer):
    assert free_text_answer(rec("q", answer))


@pytest.mark.parametrize("answer", ["\\text{even}", "5225 \\text{ cubic inches}", "\\frac{\\sqrt{3}}{2}", "(1, 2)"])
def test_short_values_are_not_free_text(answer):
    assert free_text_answer(rec("q", answer)) is None


def test_missing_fields():
    assert missing_fields(rec("q", "")) == "empty answer"
    assert missing_fields(rec("  ", "1")) == "empty problem"
    assert missing_fields(rec("q", "1")) is None


@pytest.fixture
def strict_verifier(monkeypatch):
    """The real verifier, except that answers containing "UNPARSEABLE" fail to parse."""
    import torl.reward
    from torl.data.filters import _verifier_parses

    real = torl.reward.can_parse
    monkeypatch.setattr(torl.reward, "can_parse", lambda a: "UNPARSEABLE" not in a and real(a))
    _verifier_parses.cache_clear()
    yield
    _verifier_parses.cache_clear()


def test_unparseable_answer_uses_the_verifier(strict_verifier):
    assert unparseable_answer(rec("q", "\\frac{1}{2}")) is None
    assert unparseable_answer(rec("q", "42")) is None
    assert unparseable_answer(rec("q", "x UNPARSEABLE")) == "verifier cannot parse the gold"


def test_real_verifier_parses_typical_golds():
    for gold in ["\\frac{1}{2}", "2\\sqrt{3}", "(1, 2)", "x^2+1", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"]:
        assert unparseable_answer(rec("q", gold)) is None, gold


def test_filter_counts_add_up_and_examples_name_the_rule(strict_verifier):
    records = [
        rec("Prove that 1 = 1.", "1", "proof"),
        rec("Which? (A) 1 (B) 2", "B", "mc"),
        rec("(a) Find x. (b) Find y.", "1", "multi"),
        rec("What is it?", "see proof", "text"),
        rec("What is 1/2?", "UNPARSEABLE", "unparse"),
        rec("What is 2+2?", "", "missing"),
        rec("What is 3+3?", "6", "keep"),
    ]
    kept, report = filter_records(records)
    assert [r["id"] for r in kept] == ["keep"]
    assert report.removed == {"proof": 1, "multiple_choice": 1, "multi_part": 1, "free_text_answer": 1,
                              "unparseable_answer": 1, "missing_fields": 1}
    assert report.n_in == report.n_out + sum(report.removed.values())
    assert report.examples["multiple_choice"][0]["id"] == "mc"
    assert "choice letter" in report.examples["multiple_choice"][0]["why"]


def test_rules_can_be_disabled_and_parameterised():
    records = [rec("Prove that 1 = 1.", "1", "p"), rec("q", "one two three four", "t")]
    kept, report = filter_records(records, {"proof": {"enabled": False}, "unparseable_answer": {"enabled": False},
                                            "free_text_answer": {"max_words": 5}})
    assert [r["id"] for r in kept] == ["p", "t"]
    assert "proof" not in report.details["rules"]
    kept, _ = filter_records(records, {"proof": {"patterns": ["nothing-matches-this"]},
                                       "unparseable_answer": {"enabled": False}})
    assert [r["id"] for r in kept] == ["p"]


def test_unknown_rule_or_parameter_is_an_error():
    with pytest.raises(DataError, match="unknown filter rule.*'proofs'"):
        filter_records([], {"proofs": {}})
    with pytest.raises(DataError, match="'proof' has no parameter.*'max_words'"):
        filter_records([], {"proof": {"max_words": 3}})
