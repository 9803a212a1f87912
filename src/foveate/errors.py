"""User-facing errors.

Anything a user can cause (a bad file, a bad config value, an impossible budget) raises
`FoveateError` with a one-line message that names the thing and the problem. The CLI prints
that line and exits non-zero instead of showing a traceback.
"""


class FoveateError(ValueError):
    """A problem with user input, reported as one line."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise FoveateError(message)
