"""Parsing gaps from the labelled suites, each fixed by a general rule and tested both ways (the
right reading is accepted, a wrong answer written the same way is still rejected)."""

import pytest

from torl.reward import check


def same(gold: str, pred: str) -> bool:
    return check(gold, pred).equivalent


@pytest.mark.parametrize(("gold", "pred", "expected"), [
    ("10", "10 weeks", True), ("10", "10weeks", True), ("10", "10 cm^2", True),
    ("10 weeks", "10", True), ("10 inches", r"10\text{ inch}", True), (r"6\text{ cm}^2", "6", True),
    ("10", "11 weeks", False),
    ("10 weeks", "10 days", False), (r"5\text{ cm}", r"5\text{ inches}", False),  # units differ
    ("10", "10x", False), ("3", "3mn", False), ("2", "2xy", False),  # variables, not units
])
def test_units_as_words_or_glued_to_the_number(gold, pred, expected):
    assert same(gold, pred) is expected


@pytest.mark.parametrize(("gold", "pred", "expected"), [
    ("1+2i", "i(2-i)", True), ("-1", "i^2", True), ("2i", "i(2-i)-1", True),
    ("1+2i", "2+i", False), ("1+2i", "i(2+i)", False),
    ("x^2", "x \\cdot x", True),  # other letters stay variables
])
def test_a_lone_i_is_the_imaginary_unit(gold, pred, expected):
    assert same(gold, pred) is expected


@pytest.mark.parametrize(("gold", "pred", "expected"), [
    ("1.5", "1 1/2", True), (r"\frac{7}{3}", "2 1/3", True), ("-1.5", "-1 1/2", True),
    ("1", "1 1/2", False), ("1.5", "1 1/3", False),
])
def test_mixed_numbers(gold, pred, expected):
    assert same(gold, pred) is expected


@pytest.mark.parametrize(("gold", "pred", "expected"), [
    ("20:34", "20:34:00", True), ("8:30 pm", "20:30", True), (r"8:30\text{ a.m.}", "8:30", True),
    ("20:34", "20:35", False), ("12:00", "1:00", False), ("8:30 pm", "8:30", False),
    ("7:32", "14:64", True),   # 64 is not a minute: ratios, compared by math-verify
    ("1:2", "2:4", True), ("1:2", "2:3", False),
])
def test_clock_times(gold, pred, expected):
    assert same(gold, pred) is expected


@pytest.mark.parametrize(("gold", "pred", "expected"), [
    (r"\cos x", r"\sin(90^{\circ}-x)", True), (r"\frac{1}{2}", r"\sin 30^\circ", True),
    (r"\sin x", r"\sin(90^{\circ}-x)", False), (r"\frac{\sqrt{3}}{2}", r"\sin 30^\circ", False),
    ("45", r"45^\circ", True),  # outside a trig function a degree mark is only a unit
])
def test_degrees_inside_trig_functions(gold, pred, expected):
    assert same(gold, pred) is expected


@pytest.mark.parametrize(("gold", "pred", "expected"), [
    (r"\frac{1}{432}", r"2.314814814815 \times 10^{-3}", True), ("2500", r"2.5 \cdot 10^{3}", True),
    (r"\frac{1}{433}", r"2.314814814815 \times 10^{-3}", False), ("250", r"2.5 \times 10^{3}", False),
])
def test_scientific_notation_vs_a_fraction(gold, pred, expected):
    assert same(gold, pred) is expected


CASES = r"f(x) = \begin{cases} x^2 & \text{if } x > 0 \\ -x & \text{otherwise} \end{cases}"


@pytest.mark.parametrize(("pred", "expected"), [
    (CASES, True),
    (r"\begin{cases} -x & \text{otherwise} \\ x \cdot x & 0 < x \end{cases}", True),  # rows reordered
    (r"\begin{cases} -x & x > 0 \\ x^2 & \text{otherwise} \end{cases}", False),      # values swapped
    (r"\begin{cases} x^2 & x \ge 0 \\ -x & \text{otherwise} \end{cases}", False),    # condition differs
    (r"\begin{cases} x^2 & x > 0 \end{cases}", False),                               # a piece missing
    ("0", False),
])
def test_piecewise_cases(pred, expected):
    assert same(CASES, pred) is expected


@pytest.mark.parametrize(("gold", "pred", "expected"), [
    (r"1-\frac{1}{e}", r"1-\frac{1}{\mathrm{e}}", True), (r"1-\frac{1}{e}", r"1+\frac{1}{\mathrm{e}}", False),
    ("e", r"\text{e}", True), ("2i", r"2\mathrm{i}", True),
    ("185", "185\\", True), ("186", "185\\", False),
])
def test_upright_e_and_trailing_backslash(gold, pred, expected):
    assert same(gold, pred) is expected


@pytest.mark.parametrize(("gold", "pred", "expected"), [
    ("1.22", "1,22", True), ("1,22", "1.22", True), ("0.111", "0,111", True), ("1000.99", "1000,99", True),
    ("1.23", "1,22", False),
    ("1,000", "1000", True),          # three digits after the comma: thousands
    ("-2,1", "1, -2", True),          # a comma list is a list unless the other side is a decimal
    ("1,22", "1, 22", True),
])
def test_decimal_commas(gold, pred, expected):
    assert same(gold, pred) is expected


@pytest.mark.parametrize(("gold", "pred", "expected"), [
    ("10, 4, -2", "4, 10, -2", True),             # a bare list: "enter all the solutions"
    (r"\{10, 4, -2\}", "-2, 4, 10", True),
    ("10, 4, -2", "10, 4", False),
    ("(10, 4, -2)", "(4, 10, -2)", False),        # brackets make it ordered
    ("(10, 4, -2)", "(10, 4, -2)", True),
    ("[1, 3)", "(1, 3]", False),
])
def test_lists_are_unordered_and_brackets_are_ordered(gold, pred, expected):
    assert same(gold, pred) is expected
