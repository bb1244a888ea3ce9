"""`torl verify GOLD PREDICTED`: check one answer by hand and see why it was (not) accepted."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "verify",
        help="check whether a predicted answer is equivalent to the gold answer",
        description="Print the verdict, what each side parsed to, and the reason.",
    )
    p.add_argument("gold", metavar="GOLD", help="gold answer, e.g. '\\frac{1}{2}'")
    p.add_argument("predicted", metavar="PREDICTED", help="predicted answer, or a whole response with --response")
    p.add_argument("--response", action="store_true",
                   help="PREDICTED is a full model response: extract its final \\boxed{} answer first")
    p.add_argument("--timeout", type=float, default=None, metavar="S", help="deadline in seconds (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from torl.errors import UserError
    from torl.reward import DEFAULT_TIMEOUT_S, VerifierUnavailable, check
    from torl.reward.extract import extract_graded_answer

    timeout_s = DEFAULT_TIMEOUT_S if args.timeout is None else args.timeout
    if not timeout_s > 0:
        raise UserError(f"--timeout must be > 0 seconds, got {timeout_s}")
    if not args.gold.strip():
        raise UserError("GOLD is empty; pass the reference answer, e.g. torl verify 3 'x=3'")
    predicted = extract_graded_answer(args.predicted) if args.response else args.predicted  # as `score` does
    if predicted is None:
        result = {"equivalent": False, "timed_out": False, "extracted": None, "gold_parsed": "",
                  "pred_parsed": "", "reason": "no \\boxed{} answer outside code blocks in the response"}
    else:
        try:
            verdict = check(args.gold, predicted, timeout_s=timeout_s)
        except VerifierUnavailable as e:
            raise UserError(f"verifier unavailable: {e}") from None
        result = {"extracted": predicted if args.response else None, **verdict.to_dict()}
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print("EQUIVALENT" if result["equivalent"] else ("TIMED OUT (not equivalent)" if result["timed_out"]
                                                        else "NOT EQUIVALENT"))
        if args.response:
            print(f"extracted:   {result['extracted']}")
        print(f"gold parsed: {result['gold_parsed']}")
        print(f"pred parsed: {result['pred_parsed']}")
        print(f"reason:      {result['reason']}")
    return 0 if result["equivalent"] else 1
