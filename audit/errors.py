"""Errors that mean "the user asked for something we cannot do" rather than "we have a bug"."""


class UserError(Exception):
    """A bad input: the CLI prints its one-line message and exits 2."""


class GateFailed(Exception):
    """A release gate failed: the CLI exits 1 after everything is written."""


class ProbeFailed(Exception):
    """A probe ended in an error: results are written, the audit is incomplete; the CLI exits 3."""
