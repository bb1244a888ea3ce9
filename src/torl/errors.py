"""torl's exceptions, at the bottom of the import graph: this module imports nothing from torl.

Every package raises these, and `torl.cli` catches them, so they cannot live in the CLI: run as
`python -m torl.cli`, that module is `__main__`, a second copy whose classes the library's raises
never match.
"""

from __future__ import annotations


class TorlError(Exception):
    """Base of every error torl raises on purpose."""


class UserError(TorlError):
    """A mistake the user can fix (config, flag, file): printed as one line, exit status 2, no traceback."""


class SandboxFailure(TorlError, RuntimeError):
    """The sandbox failed on OUR side (`ExecStatus.SANDBOX_ERROR`): count it, stop or retry; never show it to the model.

    Also a `RuntimeError`, as it was before this hierarchy existed, so older `except RuntimeError` still catch it.
    """
