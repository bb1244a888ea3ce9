"""Synthetic tasks where running code genuinely helps: exact answers, seeded, with a difficulty knob.

Used by the CPU training demo and the emergence benchmark: a small model cannot multiply six-digit
numbers or reduce 7^12345 mod 9973 in its head, but one line of Python can. Two kinds exist for
task mixes where code is not always the answer (bench/paper_table.py): `mental` questions a model
answers in its head; `binomial` coefficients whose natural first program (``binom(20, 8)``) fails,
as `binom` is not a Python builtin, so a model that reads the error and retries does better than
one that does not; and `factorial` quotients, which also need code. Each task is built
from its own RNG seeded by (seed, kind, difficulty, index), so the first n tasks are the same
whatever n is, and no two tasks in one call share a problem text.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from torl.data.records import DataError, make_record

MAX_DIFFICULTY = 5


def _digits(rng: random.Random, n: int) -> int:
    return rng.randint(10 ** (n - 1), 10**n - 1)


def arithmetic(rng: random.Random, d: int) -> tuple[str, int]:
    """Multi-digit products; from difficulty 3 on, a product plus or minus a third number."""
    a, b = _digits(rng, d + 1), _digits(rng, d)
    if d < 3:
        return f"Compute ${a} \\times {b}$.", a * b
    c = _digits(rng, d + 2)
    op = rng.choice("+-")
    return f"Compute ${a} \\times {b} {op} {c}$.", a * b + c if op == "+" else a * b - c


def modexp(rng: random.Random, d: int) -> tuple[str, int]:
    """Modular exponentiation with exponents far too large to expand by hand."""
    m = rng.randint(10**d + 1, 10 ** (d + 1))
    a, e = rng.randint(2, 10 * d + 20), rng.randint(10 ** (d + 1), 10 ** (d + 2))
    return f"What is the remainder when ${a}^{{{e}}}$ is divided by ${m}$?", pow(a, e, m)


def modular(rng: random.Random, d: int) -> tuple[str, int]:
    """The smallest positive solution of a linear congruence a x ≡ c (mod m), gcd(a, m) = 1."""
    while True:
        m = rng.randint(10**d + 1, 10 ** (d + 1))
        a = rng.randint(2, m - 1)
        if math.gcd(a, m) == 1:
            break
    c = rng.randint(1, m - 1)
    x = c * pow(a, -1, m) % m or m
    return f"Find the smallest positive integer $x$ such that ${a}x \\equiv {c} \\pmod{{{m}}}$.", x


def combinatorics(rng: random.Random, d: int) -> tuple[str, int]:
    """Counting: binomials, inclusion-exclusion over divisibility, or word arrangements."""
    kind = rng.randrange(3)
    if kind == 0:
        n = rng.randint(8 * d + 6, 12 * d + 12)
        k = rng.randint(2, n // 2)
        return f"In how many ways can a committee of {k} people be chosen from {n} people?", math.comb(n, k)
    if kind == 1:
        n = _digits(rng, d + 2)
        p, q = rng.sample([2, 3, 5, 7, 11, 13, 17, 19, 23], 2)
        count = n // p + n // q - n // (p * q)
        return f"How many integers from 1 to {n}, inclusive, are divisible by {p} or {q}?", count
    letters = rng.sample("ABCDEFGHKLMNPRST", min(3 + d, 8))
    word = "".join(rng.choice(letters) for _ in range(4 + 2 * d))
    count = math.factorial(len(word))
    for ch in set(word):
        count //= math.factorial(word.count(ch))
    return f"How many distinct arrangements of the letters of the string {word} are there?", count


def base_conversion(rng: random.Random, d: int) -> tuple[str, str]:
    """Convert between bases; the target base is at most 10 so the answer is a plain digit string."""
    src, dst = rng.choice([2, 3, 5, 8, 12, 16]), rng.choice([2, 3, 4, 5, 6, 7, 8, 9])
    while dst == src:
        dst = rng.choice([3, 4, 5, 6, 7, 9])
    n = rng.randint(10 ** (d + 1), 10 ** (d + 2))

    def to_base(x: int, b: int) -> str:
        out = ""
        while x:
            x, r = divmod(x, b)
            out = "0123456789ABCDEF"[r] + out
        return out

    return ((f"Convert the base-{src} number ${to_base(n, src)}_{{{src}}}$ to base {dst}. "
             f"Give the digits of the base-{dst} numeral."), to_base(n, dst))


def series(rng: random.Random, d: int) -> tuple[str, int]:
    """Sums of powers, arithmetic and geometric series with many terms."""
    kind = rng.randrange(3)
    n = rng.randint(10 * d + 10, 40 * d + 40)
    if kind == 0:
        p = rng.randint(2, d + 2)
        return f"Compute $\\sum_{{k=1}}^{{{n}}} k^{{{p}}}$.", sum(k**p for k in range(1, n + 1))
    if kind == 1:
        a, step = rng.randint(-50, 50), rng.randint(2, 9 * d)
        return ((f"What is the sum of the first {n} terms of the arithmetic sequence "
                 f"${a}, {a + step}, {a + 2 * step}, \\ldots$?"), n * (2 * a + (n - 1) * step) // 2)
    a, r, terms = rng.randint(1, 9), rng.randint(2, 3 + d), rng.randint(6 + 2 * d, 10 + 3 * d)
    return f"Compute $\\sum_{{k=0}}^{{{terms - 1}}} {a} \\cdot {r}^k$.", sum(a * r**k for k in range(terms))


def divisors(rng: random.Random, d: int) -> tuple[str, int]:
    """Number theory on large numbers: divisor counts and divisor sums."""
    n = _digits(rng, d + 3)
    divs = [k for k in range(1, math.isqrt(n) + 1) if n % k == 0]
    all_divs = set(divs) | {n // k for k in divs}
    if rng.random() < 0.5:
        return f"How many positive divisors does ${n}$ have?", len(all_divs)
    return f"What is the sum of all positive divisors of ${n}$?", sum(all_divs)


def mental(rng: random.Random, d: int) -> tuple[str, int]:
    """One-digit sums and differences (up to two digits at difficulty 3 and above): no code needed."""
    digits = 1 if d < 3 else 2
    a, b = rng.randint(1, 10**digits - 1), rng.randint(1, 10**digits - 1)
    if rng.random() < 0.5:
        return f"What is {a} + {b}?", a + b
    a, b = max(a, b), min(a, b)
    return f"What is {a} - {b}?", a - b


def factorial(rng: random.Random, d: int) -> tuple[str, int]:
    """A quotient of factorials a!/b!, a - b from 2 to d + 1 terms.

    Written the way a textbook writes it: a program copied from the question (``print(17!/14!)``)
    is a syntax error, though SmolLM2-135M's programs mostly run and compute something else;
    ``math.factorial`` or the product of the terms is right.
    """
    terms = rng.randint(2, d + 1)
    a = rng.randint(10, 60 + 10 * d)
    return f"Compute $\\frac{{{a}!}}{{{a - terms}!}}$.", math.perm(a, terms)


def binomial(rng: random.Random, d: int) -> tuple[str, int]:
    """A binomial coefficient C(n, k), k from 3 to d + 4, in LaTeX.

    Python has no `binom`: the program a model writes first (``print(binom(20, 8))``, or
    ``math.binom``) fails with a NameError or AttributeError that names the problem, and
    ``math.comb`` is right. In bench/paper_table.py's samples, 3 of SmolLM2-135M's 6 binomial
    programs failed, and after RL 16 of 16 (11 of them `binom(n, k)`).
    """
    k = rng.randint(3, d + 4)
    n = rng.randint(2 * k + 4, 20 + 10 * d)
    return f"Compute $\\binom{{{n}}}{{{k}}}$.", math.comb(n, k)


GENERATORS: dict[str, Callable[[random.Random, int], tuple[str, int | str]]] = {
    "arithmetic": arithmetic,
    "modexp": modexp,
    "modular": modular,
    "combinatorics": combinatorics,
    "base_conversion": base_conversion,
    "series": series,
    "divisors": divisors,
    "mental": mental,
    "factorial": factorial,
    "binomial": binomial,
}
TASK_KINDS = tuple(GENERATORS)


def generate_tasks(kinds: str | list[str] | None = None, n: int = 100, seed: int = 0,
                   difficulty: int = 1) -> list[dict]:
    """`n` normalized records cycling through `kinds` (all kinds when None), at `difficulty` 1-5.

    Records: id `synthetic-<kind>-d<difficulty>-s<seed>-<i>`, problem, answer (exact, as text),
    source "synthetic", level = difficulty, subject = kind.
    """
    kinds = list(TASK_KINDS) if kinds is None else [kinds] if isinstance(kinds, str) else list(kinds)
    unknown = [k for k in kinds if k not in GENERATORS]
    if unknown or not kinds:
        raise DataError(f"unknown task kind(s) {unknown}; kinds are {list(TASK_KINDS)}")
    if not 1 <= difficulty <= MAX_DIFFICULTY:
        raise DataError(f"difficulty must be 1-{MAX_DIFFICULTY}, got {difficulty}")
    if n < 0:
        raise DataError(f"n must be >= 0, got {n}")
    records, seen = [], set()
    for i in range(n):
        kind = kinds[i % len(kinds)]
        for attempt in range(100):  # redraw on a repeated problem text (small spaces at difficulty 1)
            rng = random.Random(f"{seed}:{kind}:{difficulty}:{i}:{attempt}")
            problem, answer = GENERATORS[kind](rng, difficulty)
            if problem not in seen:
                break
        else:
            raise DataError(f"could not draw {n} distinct {kind} tasks at difficulty {difficulty}; ask for fewer")
        seen.add(problem)
        records.append(make_record(id=f"synthetic-{kind}-d{difficulty}-s{seed}-{i}", problem=problem,
                                   answer=str(answer), source="synthetic", level=difficulty, subject=kind))
    return records
