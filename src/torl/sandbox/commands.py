"""`torl sandbox exec | check | demo | serve`: run code, inspect isolation, see what the model sees."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

DEMO_SNIPPETS = [
    ("arithmetic with sympy", ("from sympy import symbols, solve, Rational\n"
                               "x = symbols('x')\nroots = solve(x**2 - 5*x + 6, x)\nprint(roots, sum(roots) * Rational(1, 2))")),
    ("numpy", "import numpy as np\na = np.array([[2, 1], [1, 3]])\nprint(np.linalg.det(a).round(6), a @ a)"),
    ("an error inside a function", ("def average(xs):\n    return sum(xs) / len(xs)\n\n"
                                    "print('start')\nprint(average([]))")),
    ("a timeout", "n = 0\nwhile True:\n    n += 1"),
    ("hostile: read the home dir and the network", ("import os, socket\nprint(os.listdir(os.path.expanduser('~')))\n"
                                                    "socket.create_connection(('1.1.1.1', 80), timeout=2)")),
]


def register(subparsers) -> None:
    """Add `torl sandbox ...` to the top-level CLI."""
    parser = subparsers.add_parser("sandbox", help="run untrusted Python in the local sandbox",
                                   description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="sandbox_command", required=True, metavar="SUBCOMMAND")

    ex = sub.add_parser("exec", help="run code files (or stdin) and print the ExecResult JSON")
    ex.add_argument("files", nargs="*", default=["-"], metavar="FILE", help="Python files; '-' or none = stdin")
    ex.add_argument("--session", action="store_true",
                    help="run all FILEs in order in one session (later files see earlier definitions)")
    ex.add_argument("--observation", action="store_true", help="also print what the model would see")
    _add_common(ex, timeouts=True)
    ex.set_defaults(func=cmd_exec)

    check = sub.add_parser("check", help="health check + which isolation mechanisms are active")
    _add_common(check, timeouts=False)
    check.set_defaults(func=cmd_check)

    demo = sub.add_parser("demo", help="run model-like snippets and show results and observations")
    _add_common(demo, timeouts=False)
    demo.add_argument("--timeout", type=float, default=3.0, help="timeout for the demo snippets (s)")
    demo.set_defaults(func=cmd_demo)

    _register_serve(sub)


def _register_serve(sub) -> None:
    try:
        from torl.sandbox.http.server import register_serve
    except ImportError as e:
        reason = f"{type(e).__name__}: {e}"
        serve = sub.add_parser("serve", help="HTTP sandbox server (unavailable: see `torl sandbox serve`)")

        def unavailable(args) -> int:
            from torl.errors import UserError
            raise UserError(f"`torl sandbox serve` is unavailable because torl.sandbox.http.server failed to import "
                            f"({reason}); reinstall torl with its dependencies (pip install -e .)")

        serve.set_defaults(func=unavailable)
        return
    register_serve(sub)


def _add_common(parser: argparse.ArgumentParser, *, timeouts: bool) -> None:
    if timeouts:
        parser.add_argument("--timeout", type=float, default=None, help="wall-clock limit per run (s)")
        parser.add_argument("--memory-mb", type=int, default=None, help="memory budget per run (MB)")
    parser.add_argument("--workers", type=int, default=None, help="number of warm workers")
    parser.add_argument("--isolation", choices=["bwrap", "none"], default="bwrap",
                        help="'none' runs code UNISOLATED (only for trusted code)")
    parser.add_argument("--allow-host-root", action="store_true",
                        help="as root, let code run as HOST ROOT instead of an unprivileged uid (unsafe)")


def _config(args, workers_default: int):
    from torl.sandbox.config import SandboxConfig

    return SandboxConfig(workers=args.workers or workers_default, isolation=args.isolation,
                         allow_host_root=args.allow_host_root)


def _read_sources(files: list[str]) -> list[tuple[str, str]]:
    from torl.errors import UserError

    sources = []
    for name in files:
        try:
            data = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
        except OSError as e:
            raise UserError(f"cannot read {name}: {e.strerror}") from None
        try:
            sources.append((name, data.decode("utf-8")))
        except UnicodeDecodeError as e:
            raise UserError(f"{name} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    return sources


def cmd_exec(args) -> int:
    from torl.errors import UserError
    from torl.sandbox import (
        InvalidCode,
        LocalSandbox,
        SandboxUnavailable,
        format_observation,
    )

    sources = _read_sources(args.files)

    async def go():
        async with LocalSandbox(_config(args, workers_default=1 if args.session else min(len(sources), 4))) as sb:
            limits = {"timeout": args.timeout, "memory_mb": args.memory_mb}
            if args.session:
                session = await sb.open_session()
                return [await sb.run(code, session=session, **limits) for _, code in sources]
            return await sb.run_many([code for _, code in sources], **limits)

    try:
        results = asyncio.run(go())
    except (InvalidCode, SandboxUnavailable) as e:
        raise UserError(str(e)) from None
    payload = []
    for (name, _), result in zip(sources, results):
        item = {"file": name, **result.to_dict()}
        if args.observation and result.status.value != "sandbox_error":
            item["observation"] = format_observation(result)
        payload.append(item)
    print(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2, ensure_ascii=False))
    return 1 if any(r.status.value == "sandbox_error" for r in results) else 0


def cmd_check(args) -> int:
    from torl.errors import UserError
    from torl.sandbox import LocalSandbox, SandboxUnavailable

    async def go():
        async with LocalSandbox(_config(args, workers_default=1)) as sb:
            await sb.health_check()
            return sb.isolation_report(), sb.worker_info

    try:
        report, info = asyncio.run(go())
    except SandboxUnavailable as e:
        raise UserError(str(e)) from None
    print(f"sandbox health check: OK (python {info.get('python')}, pre-imported: "
          f"{', '.join(info.get('preloaded', []))})")
    if info.get("failed"):
        print(f"  could not pre-import: {info['failed']}")
    width = max(len(name) for name, _, _ in report)
    for name, active, detail in report:
        print(f"  [{'on ' if active else 'OFF'}] {name:<{width}}  {detail}")
    return 0 if all(active for _, active, _ in report) else 1


def cmd_demo(args) -> int:
    from torl.errors import UserError
    from torl.sandbox import LocalSandbox, SandboxUnavailable, format_observation

    async def go():
        async with LocalSandbox(_config(args, workers_default=2)) as sb:
            return await sb.run_many([code for _, code in DEMO_SNIPPETS], timeout=args.timeout)

    try:
        results = asyncio.run(go())
    except SandboxUnavailable as e:
        raise UserError(str(e)) from None
    for (title, code), result in zip(DEMO_SNIPPETS, results):
        print(f"=== {title}\n```python\n{code}\n```")
        print(f"-> status={result.status.value} exit_code={result.exit_code} duration={result.duration_s * 1000:.0f} ms")
        if result.status.value == "sandbox_error":
            print(f"SANDBOX ERROR (ours, not shown to a model): {result.sandbox_message}\n")
            continue
        print(f"```output\n{format_observation(result)}\n```\n")
    return 1 if any(r.status.value == "sandbox_error" for r in results) else 0
