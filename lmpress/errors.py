"""Errors a user can cause. The CLI prints them as one line and exits non-zero."""


class LmpressError(Exception):
    """A problem with the user's input, with a message that says what to do."""
