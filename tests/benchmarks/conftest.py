"""The benchmark scripts' folder on `sys.path`, so that tests load them with `benchlib.load`
(as the scripts load each other)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
