"""User-facing errors: one line naming the problem and the fix; the CLI exits 2."""


class UserError(Exception):
    """Bad input. The message names the problem and how to fix it."""

    exit_code = 2
