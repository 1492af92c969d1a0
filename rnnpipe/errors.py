"""The error types rnnpipe raises for problems a user can fix.

The CLI prints these as one line (`rnnpipe: error: <file>:<line>: <what>` or `<dotted.key>:
<what>`) and exits 2, which the Prefect flow does not retry; `--debug` shows the traceback. An
`OSError` (disk full, no permission to write) is one line with exit 1. Anything else is a bug
and keeps its traceback.
"""


class RnnpipeError(Exception):
    """A problem with the user's input, configuration or environment."""


class ParamsError(RnnpipeError):
    """`params.yaml` (or an override) is invalid; the message names the dotted key."""


class DataError(RnnpipeError):
    """The corpus or a step's input data is unusable; the message names the file and line."""
