"""Errors that are the user's to fix: the CLI prints them in one line and exits with code 2."""


class UserError(Exception):
    """A mistake in what the user gave us: a config value, a path, a model, a log.

    The message must name the field or path, the value, and what is allowed. The CLI prints it
    without a traceback and exits with `exit_code` (2 by default).
    """

    exit_code = 2


class BudgetExceeded(Exception):
    """A measured quantity (latency, accuracy drop) exceeded its configured budget: exit code 1."""

    exit_code = 1
