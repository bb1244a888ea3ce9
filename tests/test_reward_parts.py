"""Answers in several parts: a gold with several parts (a comma list, a set, several boxes) is
compared part by part, in any order; a response that boxes each part is scored on all its
boxes. Property tests over seeded random part lists, graded through `score` as in training."""

import random
from fractions import Fraction

import pytest

from torl.reward import check, extract_boxed, score
from torl.reward.extract import extract_graded_answer, final_boxes

CONNECTIVES = [" and ", ", ", r" \quad \text{and} \quad ", " or ", r"$ and $", ",\n"]


def write_value(v, rng: random.Random, exact: bool = True) -> str:
    if isinstance(v, tuple):
        return "(" + ", ".join(write_value(x, rng, exact) for x in v) + ")"
    if v.denominator == 1:
        return str(v.numerator)
    if not exact and rng.random() < 0.5 and v.denominator in (2, 4, 5, 8):
        return str(float(v))  # a terminating fraction as a decimal: still the same part
    sign = "-" if v < 0 else ""
    return f"{sign}\\frac{{{abs(v.numerator)}}}{{{v.denominator}}}"


def random_value(rng: random.Random, kind: str):
    def number():
        return Fraction(rng.randint(-20, 20), rng.choice([1, 1, 2, 3, 4, 5]))
    return (number(), number()) if kind == "tuple" else number()


def random_parts(rng: random.Random, kind: str, k: int) -> list:
    parts: list = []
    while len(parts) < k:
        v = random_value(rng, kind)
        if v not in parts:
            parts.append(v)
    return parts


def write_gold(parts: list, rng: random.Random) -> str:
    style = rng.choice(["list", "boxes", "set"])
    written = [write_value(p, rng) for p in parts]
    if style == "boxes":
        return rng.choice(CONNECTIVES[:4]).join(f"\\boxed{{{w}}}" for w in written)
    if style == "set" and not isinstance(parts[0], tuple):
        return "\\{" + ", ".join(written) + "\\}"
    return ", ".join(written)


def write_response(parts: list, rng: random.Random) -> str:
    written = [write_value(p, rng, exact=False) for p in rng.sample(parts, len(parts))]
    if rng.random() < 0.5:
        boxes = rng.choice(CONNECTIVES).join(f"\\boxed{{{w}}}" for w in written)
    else:
        boxes = "\\boxed{" + ", ".join(written) + "}"
    return f"We check each case.\nSo the solutions are ${boxes}$."


@pytest.mark.parametrize(("seed", "kind"), [(0, "number"), (1, "number"), (2, "tuple"), (3, "tuple")])
def test_parts_match_in_any_order_and_all_must_be_there(seed, kind):
    rng = random.Random(seed)
    for _ in range(12):
        parts = random_parts(rng, kind, rng.randint(2, 4))
        gold = write_gold(parts, rng)
        assert score(write_response(parts, rng), gold).correct, gold

        fewer = rng.sample(parts, len(parts) - 1)
        assert not score(write_response(fewer, rng), gold).correct, (gold, fewer)

        extra = random_parts(rng, kind, len(parts) + 1)
        extra = parts + [next(v for v in extra if v not in parts)]
        assert not score(write_response(extra, rng), gold).correct, (gold, extra)

        changed = parts[:]
        i = rng.randrange(len(parts))
        while changed[i] in parts:
            changed[i] = random_value(rng, kind)
        assert not score(write_response(changed, rng), gold).correct, (gold, changed)

        if kind == "tuple":  # order inside brackets matters
            a, b = parts[0]
            if a != b and (b, a) not in parts:
                flipped = [(b, a)] + parts[1:]
                assert not score(write_response(flipped, rng), gold).correct, (gold, flipped)


def test_issue_examples():
    assert score(r"$\boxed{(2, 2)}$ and $\boxed{(6, 2)}$", "(2, 2), (6, 2)").correct
    assert not score(r"$\boxed{(2, 2)}$ and $\boxed{(6, 3)}$", "(2, 2), (6, 2)").correct
    assert not score(r"so $\boxed{(6, 2)}$", "(2, 2), (6, 2)").correct  # one part is not the answer
    assert check(r"\boxed{1} and \boxed{-2}", "-2, 1").equivalent
    assert not check(r"\boxed{1} and \boxed{-2}", "-2").equivalent  # the gold is not its last box
    assert not check(r"\(\boxed{1}\) and \(\boxed{-2}\).", "-2").equivalent
    assert extract_boxed(r"so \boxed{1} and \boxed{-2}.") == "1, -2"


def test_single_part_gold_takes_the_last_box():
    response = r"At first I got $\boxed{3}$, or rather $\boxed{5}$."
    assert extract_graded_answer(response) == r"\boxed{3}, \boxed{5}"
    assert score(response, "5").correct
    assert not score(response, "3").correct


def test_a_box_before_a_sentence_is_not_a_part():
    text = r"Step one gives $\boxed{99}$, which we now use to find the two roots. They are $\boxed{1}$ and $\boxed{2}$."
    assert final_boxes(text) == ["1", "2"]
    assert score(text, "1, 2").correct
    assert final_boxes(r"\boxed{1} no no no no no \boxed{2}") == ["2"]  # no connective between
    assert final_boxes(r"\boxed{(3, 3)} \text{ for part (a) and } \boxed{(1, 1)}") == ["(3, 3)", "(1, 1)"]
    assert final_boxes(r"\boxed{\boxed{1}}") == ["1"]  # a box around a box is one box
    assert final_boxes(r"\boxed{3} then \boxed{4") == []  # a truncated last box is no answer
