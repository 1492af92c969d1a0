"""`python -m rnnpipe` is the `rnnpipe` command."""

from rnnpipe.cli import main

main()
