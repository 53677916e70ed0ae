"""Errors a user can cause and fix."""


class UserError(Exception):
    """Bad input from the user: the message names the input and the fix.

    The CLI prints it without a traceback and exits with status 2.
    """
