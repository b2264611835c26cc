"""User-facing errors: one line that names the problem and the fix.

The CLI and the server print `str(err)` for a RyzansteinError and never a traceback.
"""


class RyzansteinError(Exception):
    """A problem the user can fix: bad input, a missing model, an invalid setting."""


class ModelNotFound(RyzansteinError):
    pass


class ConfigError(RyzansteinError, ValueError):
    pass


class ContextOverflow(RyzansteinError):
    pass


class IncompatibleDraft(RyzansteinError):
    pass


class MissingExtra(RyzansteinError):
    """A part whose optional dependencies are not installed: the line names the extra that installs them."""

    def __init__(self, what: str, extra: str) -> None:
        super().__init__(f"{what} needs the {extra} extra: pip install 'ryzanstein[{extra}]'")
        self.extra = extra
