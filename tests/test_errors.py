"""One error tree (torl.errors): every torl exception is a user mistake (exit 2) or our failure (exit 1)."""

import inspect

import pytest

from torl import cli, errors


def _classes():
    return [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == "torl.errors"]


def test_every_class_is_on_one_side_and_keeps_its_builtin_base():
    for cls in _classes():
        if cls in (errors.TorlError, errors.UserError, errors.InfraError):
            continue
        assert issubclass(cls, errors.UserError) != issubclass(cls, errors.InfraError), cls
    assert issubclass(errors.DataError, ValueError) and issubclass(errors.UnknownSession, KeyError)
    assert issubclass(errors.WorkerDied, RuntimeError) and issubclass(errors.ServerUnreachable, ConnectionError)


def test_the_packages_raise_the_tree_s_classes():
    from torl.data.records import DataError
    from torl.engines.models import ModelNotFound, resolve_model
    from torl.sandbox.base import SandboxUnavailable

    assert DataError is errors.DataError and SandboxUnavailable is errors.SandboxUnavailable
    with pytest.raises(errors.UserError):  # a bad model name is the user's to fix
        resolve_model("/no/such/model/dir")
    assert ModelNotFound is errors.ModelNotFound


@pytest.mark.parametrize("exc, status, shown", [
    (errors.DataError("bad row 3: no 'answer'"), 2, "torl: error: bad row 3: no 'answer'"),
    (errors.UnknownSession("s-1 was closed"), 2, "torl: error: s-1 was closed"),
    (errors.WorkerDied("worker exited\n  stderr tail: boom"), 1, "torl: error: WorkerDied: worker exited stderr tail: boom"),
])
def test_the_cli_handles_each_side_once(monkeypatch, capsys, exc, status, shown):
    def boom(_args):
        raise exc

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    args = parser.parse_args(["verify", "1", "1"])
    monkeypatch.setattr(parser, "parse_args", lambda argv=None: args)
    monkeypatch.setattr(args, "func", boom)
    assert cli.main([]) == status
    assert capsys.readouterr().err.strip() == shown
