"""The package's shape, read from the sources' imports (nothing is imported): no cycles, the CLI
at the top, steps independent of each other, the model free of the pipeline (it is logged and
served on its own), modules of a readable size; and two safety rules (no unpickling, servers on
localhost)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MAX_LINES = 350
# Longer on purpose; docs/ARCHITECTURE.md gives each one's reason.
LONG_MODULES = {"rnnpipe/config.py", "rnnpipe/model/lstm.py", "rnnpipe/model/embeddings.py",
                "flows/sweep.py"}
TRAINING_ONLY = {"rnnpipe/model/training.py", "rnnpipe/model/embeddings.py"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


FILES = {module_name(p): p for p in sorted([*(REPO / "rnnpipe").rglob("*.py"),
                                            *(REPO / "flows").rglob("*.py")])}


def imports(path: Path) -> set[str]:
    """The rnnpipe/flows modules `path` imports, at module level or inside functions (a lazy
    import is still a dependency), resolved to modules (`from rnnpipe.model import lstm` is
    `rnnpipe.model.lstm`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in FILES
                     else node.module for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in FILES:  # `import rnnpipe.model.lstm as x` and the like
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    found.discard(module_name(path))
    return found


GRAPH = {name: imports(path) for name, path in FILES.items()}


def rel(name: str) -> str:
    return FILES[name].relative_to(REPO).as_posix()


def test_the_graph_is_not_empty():
    edges = sum(len(targets) for targets in GRAPH.values())
    print(f"\n{len(GRAPH)} modules, {edges} import edges among them")
    assert "rnnpipe.cli" in GRAPH and "flows.pipeline" in GRAPH and edges > 50
    assert "rnnpipe.model.lstm" in GRAPH["rnnpipe.model.network"]


def test_no_import_cycles():
    cycles = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(name: str, stack: list[str]) -> None:
        state[name] = 1
        for target in sorted(GRAPH[name]):
            if state.get(target) == 1:
                cycles.append(" → ".join([*stack[stack.index(target):], target]))
            elif target not in state:
                visit(target, [*stack, target])
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_only_main_imports_the_cli():
    importers = sorted(rel(name) for name, targets in GRAPH.items() if "rnnpipe.cli" in targets)
    assert importers == ["rnnpipe/__main__.py"]


def test_no_step_imports_another():
    steps = {name for name in GRAPH if name.startswith("rnnpipe.steps.")}
    assert {s.rsplit(".", 1)[1] for s in steps} == {"ingest", "vocab", "train", "evaluate"}
    for step in steps:
        assert not (GRAPH[step] & steps), f"{rel(step)} imports {GRAPH[step] & steps}"


def test_the_model_imports_nothing_of_the_pipeline():
    for name in (n for n in GRAPH if n.startswith("rnnpipe.model.")):
        allowed = {"rnnpipe.errors"} | {n for n in GRAPH if n.startswith("rnnpipe.model")}
        if rel(name) in TRAINING_ONLY:
            allowed |= {"rnnpipe.metrics", "rnnpipe.io"}
        extra = GRAPH[name] - allowed
        assert not extra, f"{rel(name)} imports {sorted(extra)}"


def test_the_served_model_needs_only_its_own_code():
    """The logged model carries `rnnpipe/errors.py` and the served `model` modules (the
    registry's SERVED_MODULES): those must import nothing else of rnnpipe."""
    registry = ast.parse((REPO / "rnnpipe" / "tracking" / "registry.py").read_text())
    (served,) = [ast.literal_eval(node.value) for node in ast.walk(registry)
                 if isinstance(node, ast.Assign)
                 and any(getattr(t, "id", "") == "SERVED_MODULES" for t in node.targets)]
    modules = {"rnnpipe.model" if m == "__init__" else f"rnnpipe.model.{m}" for m in served}
    assert {"rnnpipe.model.classifier", "rnnpipe.model.pyfunc_model"} <= modules
    for name in modules:
        extra = GRAPH[name] - modules - {"rnnpipe.errors"}
        assert not extra, f"{rel(name)} is served but imports {sorted(extra)}"
    # What `model_code` copies must exist.
    for name in modules:
        assert FILES[name].exists()


def test_only_the_cli_imports_the_flows():
    for name, targets in GRAPH.items():
        if name.startswith("rnnpipe.") and name != "rnnpipe.cli":
            flows = sorted(t for t in targets if t.startswith("flows"))
            assert not flows, f"{rel(name)} imports {flows}"


@pytest.mark.parametrize("name", sorted(FILES))
def test_modules_stay_readable(name):
    path = rel(name)
    lines = len(FILES[name].read_text(encoding="utf-8").splitlines())
    if path in LONG_MODULES:
        return
    assert lines <= MAX_LINES, f"{path} has {lines} lines (at most {MAX_LINES}, or split it)"


def test_long_modules_are_still_there():
    """The allow-list names modules that exist (a renamed one must leave it)."""
    assert all((REPO / path).exists() for path in LONG_MODULES)


# --- safety ---------------------------------------------------------------------------------------

def _calls(name: str) -> list[tuple[str, ast.Call]]:
    found = []
    for path in FILES.values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name):
                called = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
                if called == name:
                    found.append((f"{path.relative_to(REPO)}:{node.lineno}", node))
    return found


def test_keras_models_load_in_safe_mode_and_nothing_is_unpickled():
    loads = [(where, call) for where, call in _calls("load_model")
             if "keras" in ast.unparse(call.func)]
    assert loads, "expected rnnpipe.model.network to load .keras files"
    for where, call in loads:
        safe = {k.arg: ast.unparse(k.value) for k in call.keywords}.get("safe_mode")
        assert safe == "True", f"{where}: keras load_model without safe_mode=True"
    source = "\n".join(p.read_text(encoding="utf-8") for p in FILES.values())
    for unsafe in ("import pickle", "cloudpickle", "joblib.load", "allow_pickle=True",
                   "torch.load", "yaml.load(", "yaml.unsafe_load", "eval(", "exec(",
                   "safe_mode=False"):
        assert unsafe not in source, unsafe


def test_servers_bind_to_localhost_by_default():
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^HOST \?= 127\.0\.0\.1$", makefile, re.M)
    hosts = re.findall(r"--host\s+(\S+)", makefile)
    assert hosts and set(hosts) == {"$(HOST)"}, hosts
    everything = makefile + "".join(p.read_text(encoding="utf-8") for p in FILES.values())
    assert "0.0.0.0" not in everything
    # The sweep's local Dask cluster: `host` binds the scheduler and workers; the dashboard has
    # its own address, and Dask's default (":8787") is every interface.
    sweep = (REPO / "flows" / "sweep.py").read_text(encoding="utf-8")
    assert '"host": "127.0.0.1"' in sweep
    assert re.search(r'"dashboard_address": "127\.0\.0\.1:\d+"', sweep)
