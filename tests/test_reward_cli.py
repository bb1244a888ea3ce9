"""`torl verify` prints the verdict, parsed forms and reason."""

import argparse
import json

import pytest

from torl.reward.commands import register


def _run(argv, capsys):
    parser = argparse.ArgumentParser(prog="torl")
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    code = args.func(args)
    return code, capsys.readouterr().out


def test_verify_plain_and_json(capsys):
    code, out = _run(["verify", r"\frac{1}{2}", "0.5"], capsys)
    assert code == 0 and out.startswith("EQUIVALENT") and "reason:" in out and "1/2" in out
    code, out = _run(["verify", "3", r"so \boxed{x=4}", "--response", "--json"], capsys)
    result = json.loads(out)
    assert code == 1 and result["equivalent"] is False and result["extracted"] == "x=4"
    assert result["pred_parsed"] == "Eq(x, 4)"


def test_verify_user_errors(capsys):
    from torl.cli import UserError

    with pytest.raises(UserError, match="--timeout"):
        _run(["verify", "1", "1", "--timeout", "0"], capsys)
    code, out = _run(["verify", "1", "no box here", "--response"], capsys)
    assert code == 1 and "no \\boxed{}" in out
