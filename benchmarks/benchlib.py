"""What the benchmarks share: loading a sibling script as a module, and copying the project's
sources into a scratch project. (`benchmarks/` is a folder of scripts, not a package: a script
run as `python benchmarks/x.py` finds this module beside it; the tests put the folder on
`sys.path`.)"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent


def load(name: str) -> ModuleType:
    """`benchmarks/<name>.py` as the module `bench_<name>`, loaded once."""
    module_name = f"bench_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, HERE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def copy_sources(source: Path, project: Path, names: Iterable[str]) -> None:
    """Copy the files and folders `names` (relative paths; missing ones skipped) of the project
    tree `source` into `project`, without bytecode."""
    for name in names:
        path = source / name
        if path.is_dir():
            shutil.copytree(path, project / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif path.exists():
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, project / name)
