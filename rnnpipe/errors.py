"""The error types rnnpipe raises for problems a user can fix.

The CLI prints these as one line and exits non-zero; anything else is a bug and keeps its
traceback.
"""


class RnnpipeError(Exception):
    """A problem with the user's input, configuration or environment."""


class ParamsError(RnnpipeError):
    """`params.yaml` (or an override) is invalid; the message names the dotted key."""


class DataError(RnnpipeError):
    """The corpus or a step's input data is unusable; the message names the file and line."""
