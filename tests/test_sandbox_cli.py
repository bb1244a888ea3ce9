"""`torl sandbox exec` end to end through the real CLI entry point."""

import json

from torl.cli import main


def test_exec_files_in_one_session(tmp_path, capsys):
    first, second = tmp_path / "a.py", tmp_path / "b.py"
    first.write_text("x = 21\n")
    second.write_text("print(x * 2)\n")
    assert main(["sandbox", "exec", "--session", "--observation", str(first), str(second)]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in results] == ["ok", "ok"]
    assert results[1]["stdout"] == "42\n" and results[1]["observation"] == "42\n"


def test_exec_reports_timeout(tmp_path, capsys):
    loop = tmp_path / "loop.py"
    loop.write_text("while True:\n    pass\n")
    assert main(["sandbox", "exec", "--timeout", "1", str(loop)]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "timeout"


def test_exec_user_errors(tmp_path, capsys):
    assert main(["sandbox", "exec", str(tmp_path / "missing.py")]) == 2
    assert "cannot read" in capsys.readouterr().err
    bad = tmp_path / "bad.py"
    bad.write_bytes(b"print('\xff')")
    assert main(["sandbox", "exec", str(bad)]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    ok = tmp_path / "ok.py"
    ok.write_text("print(1)")
    assert main(["sandbox", "exec", "--timeout", "-5", str(ok)]) == 2
    assert "timeout must be" in capsys.readouterr().err
