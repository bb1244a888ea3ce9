"""Matrices: a row break `\\\\` is never a thin space, so transposes, row swaps and reshapes are
equal only when their values say so. Property tests over seeded random matrices written the way
MATH golds and model answers write them (`\\\\ ` with a space, without, across lines)."""

import random

import pytest

from torl.reward import check
from torl.reward.equivalence import compare
from torl.reward.normalize import clean_answer

MATH_ROW_BREAK = r" \\ "  # how MATH golds write it: the spelling that used to merge rows
ROW_BREAKS = [MATH_ROW_BREAK] * 3 + [r"\\", r" \\", "\\\\\n", r"\\ "]
CELL_BREAKS = [" & ", "&", "& "]
ENVIRONMENTS = ["pmatrix", "bmatrix"]


def latex(rows: list[list[int]], rng: random.Random, row_break: str | None = None) -> str:
    env = rng.choice(ENVIRONMENTS)
    cell, row_break = rng.choice(CELL_BREAKS), row_break or rng.choice(ROW_BREAKS)
    body = row_break.join(cell.join(str(v) for v in row) for row in rows)
    return f"\\begin{{{env}}} {body} \\end{{{env}}}"


def random_matrix(rng: random.Random) -> list[list[int]]:
    m, n = rng.randint(1, 3), rng.randint(1, 3)
    values = range(-2, 3) if rng.random() < 0.5 else range(-9, 10)  # small ranges make ties happen
    return [[rng.choice(values) for _ in range(n)] for _ in range(m)]


def transpose(rows):
    return [list(col) for col in zip(*rows)]


def test_issue_examples_are_not_equal():
    assert not compare(r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}", r"\begin{pmatrix} 1 & 3 \\ 2 & 4 \end{pmatrix}").equivalent
    assert not compare(r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}", r"\begin{pmatrix} 1 & 5 & 4 \end{pmatrix}").equivalent
    assert not compare(r"\begin{pmatrix} 2 \\ 3 \end{pmatrix}", r"\begin{pmatrix} 3 \\ 2 \end{pmatrix}").equivalent
    assert compare(r"\begin{pmatrix} 2 \\ 3 \end{pmatrix}", r"\begin{bmatrix}2\\3\end{bmatrix}").equivalent
    # through the worker pool too, as training calls it
    assert not check(r"\begin{pmatrix} 2 \\ 3 \end{pmatrix}", r"\begin{pmatrix} 3 \\ 2 \end{pmatrix}").equivalent


def test_row_break_is_one_token_and_thin_space_is_a_space():
    assert clean_answer(r"\begin{pmatrix} 2 \\ 3 \end{pmatrix}") == r"\begin{pmatrix} 2 \\ 3 \end{pmatrix}"
    assert clean_answer(r"1\ 000") == "1 000"  # `\ ` alone is a thin space
    assert clean_answer("$\\begin{pmatrix} 2 \\\\ 3 \\end{pmatrix}$") == r"\begin{pmatrix} 2 \\ 3 \end{pmatrix}"


@pytest.mark.parametrize("seed", range(4))
def test_transpose_row_swap_and_reshape_follow_the_values(seed):
    rng = random.Random(seed)
    for _ in range(40):
        rows = random_matrix(rng)
        gold = latex(rows, rng, MATH_ROW_BREAK)
        assert compare(gold, latex(rows, rng)).equivalent, gold  # same values, other spacing

        flipped = transpose(rows)
        assert compare(gold, latex(flipped, rng)).equivalent == (flipped == rows), (gold, flipped)

        if len(rows) > 1:
            i, j = rng.sample(range(len(rows)), 2)
            swapped = [r[:] for r in rows]
            swapped[i], swapped[j] = swapped[j], swapped[i]
            assert compare(gold, latex(swapped, rng)).equivalent == (swapped == rows), (gold, swapped)

        flat = [v for r in rows for v in r]
        if len(flat) > 1:  # same values in another shape: never the same matrix
            shape = [flat] if len(rows) > 1 else [[v] for v in flat]
            assert not compare(gold, latex(shape, rng)).equivalent, (gold, shape)

        changed = [r[:] for r in rows]
        changed[rng.randrange(len(rows))][0] += 1
        assert not compare(gold, latex(changed, rng)).equivalent, (gold, changed)
