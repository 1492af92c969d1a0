"""Atomic writes: a failed or killed writer leaves the old file (or none), its temporary file is
cleaned by the next writer, and every output in the code base is written through `rnnpipe.io`."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rnnpipe.io import atomic_open, atomic_path, read_json, write_json

REPO = Path(__file__).resolve().parent.parent


def leftovers(root: Path) -> list[str]:
    """Temporary files an atomic write would leave if it had been interrupted."""
    return [str(p.relative_to(root)) for p in root.rglob("*") if ".tmp" in p.name]


def test_write_json_is_stable_and_readable(tmp_path):
    target = tmp_path / "deep" / "er" / "metrics.json"
    write_json(target, {"b": 1, "a": {"z": "中文", "y": [1.5]}})
    assert target.read_text(encoding="utf-8") == \
        '{\n  "a": {\n    "y": [\n      1.5\n    ],\n    "z": "中文"\n  },\n  "b": 1\n}\n'
    assert read_json(target) == {"a": {"y": [1.5], "z": "中文"}, "b": 1}
    assert oct(target.stat().st_mode & 0o777) == "0o644"


def test_a_failed_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "reports" / "metrics.json"
    write_json(target, {"accuracy": 0.9})
    before = target.read_bytes()
    with pytest.raises(TypeError):
        write_json(target, {"accuracy": object()})  # fails half-way through json.dump
    with pytest.raises(RuntimeError), atomic_open(target) as fh:
        fh.write('{"accuracy": ')
        raise RuntimeError("killed")
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]


def test_a_failed_first_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "model.keras") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_temporary_names_keep_the_whole_suffix(tmp_path):
    with atomic_path(tmp_path / "models" / "best.weights.h5") as tmp:
        assert tmp.name.endswith(".weights.h5")  # Keras checks the suffix of what it saves
        assert tmp.parent == tmp_path / "models"  # same folder: the rename is atomic
        tmp.write_bytes(b"w")
    with atomic_path(tmp_path / "model.keras") as tmp:
        assert tmp.name.endswith(".keras")
        tmp.write_bytes(b"m")
    assert (tmp_path / "models" / "best.weights.h5").read_bytes() == b"w"
    assert not leftovers(tmp_path)


def test_text_is_utf8_with_unix_newlines(tmp_path):
    with atomic_open(tmp_path / "a.tsv") as fh:
        fh.write("pos\t好\n")
    assert (tmp_path / "a.tsv").read_bytes() == "pos\t好\n".encode()
    with atomic_open(tmp_path / "b.bin", "wb") as fh:
        fh.write(b"\r\n")
    assert (tmp_path / "b.bin").read_bytes() == b"\r\n"


WRITER = """
import os, signal, sys
from rnnpipe.io import atomic_open
with atomic_open(sys.argv[1]) as fh:
    fh.write("half of the new cont")
    fh.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_writer_leaves_the_old_file_and_its_temp_is_cleaned_later(tmp_path):
    target = tmp_path / "data" / "train.tsv"
    with atomic_open(target) as fh:
        fh.write("pos\told\n")
    killed = subprocess.run([sys.executable, "-c", WRITER, str(target)], cwd=REPO,
                            capture_output=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert target.read_text() == "pos\told\n"
    (stale,) = leftovers(tmp_path)  # SIGKILL skips every cleanup...
    with atomic_open(target) as fh:  # ...so the next writer of the file removes it
        fh.write("pos\tnew\n")
    assert target.read_text() == "pos\tnew\n" and not leftovers(tmp_path), stale


def test_a_live_writers_temp_is_left_alone(tmp_path):
    """Only temps whose writer process is gone are removed (two writers of one file)."""
    target = tmp_path / "train.tsv"
    with atomic_path(target) as first:
        first.write_text("a")
        with atomic_path(target) as second:  # this process is alive: `first` stays
            assert first.exists()
            second.write_text("b")
        assert first.exists()
    assert target.read_text() == "a" and not leftovers(tmp_path)


# --- every output goes through rnnpipe.io ------------------------------------------------------

# Calls that write files, by the called name (`open`/`ZipFile` only with a writing mode).
WRITING_METHODS = {"write_text", "write_bytes", "save", "save_weights", "savefig", "to_csv",
                   "writestr", "dump", "copy", "copy2", "copyfile", "copytree", "link"}
# Writes outside rnnpipe.io, by (file, enclosing function), and why each is fine.
NOT_OUTPUTS = {
    ("rnnpipe/model/network.py", "save_model"):
        "its one caller (the train step) passes atomic_path's temporary path",
    ("rnnpipe/model/network.py", "normalize_keras_archive"):
        "rewrites the file save_model has just written (still the temporary path)",
    ("rnnpipe/tracking/registry.py", "model_code"):
        "the model's code copied into a temporary folder that MLflow logs",
    ("rnnpipe/tracking/store.py", "_sqlite_init_lock"): "an empty lock file",
    ("flows/trials.py", "_link_or_copy"): "copies the project into a trial's scratch folder",
    ("flows/trials.py", "make_workspace"): "the scratch copy of the project and its DVC config",
}
SAFE_TARGETS = {"tmp", "fh", "out"}  # an atomic_path temp or an atomic_open handle


def _source_files() -> list[Path]:
    return sorted([*(REPO / "rnnpipe").rglob("*.py"), *(REPO / "flows").rglob("*.py")])


def _writes(tree: ast.AST) -> list[tuple[ast.Call, str]]:
    """Writing calls in `tree` with their enclosing function's name."""
    found = []

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            modes = [a.value for a in [*node.args[1:2], *(k.value for k in node.keywords
                                                          if k.arg == "mode")]
                     if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            writing_open = name in ("open", "ZipFile") and any(
                set(m) & set("wax") for m in modes)
            numpy_save = name in ("save", "savez", "savetxt") and ast.unparse(func).startswith(
                ("np.", "numpy."))
            if name in WRITING_METHODS or writing_open or numpy_save:
                found.append((node, function))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, "<module>")
    return found


def test_every_output_is_written_through_rnnpipe_io():
    """A new writer must use `rnnpipe.io` (or write into its temporary path) or be listed in
    NOT_OUTPUTS with the reason."""
    unexplained = []
    for path in _source_files():
        rel = path.relative_to(REPO).as_posix()
        if rel == "rnnpipe/io.py":
            continue
        for call, function in _writes(ast.parse(path.read_text(encoding="utf-8"))):
            names = {n.id for n in ast.walk(call) if isinstance(n, ast.Name)}
            if names & SAFE_TARGETS or (rel, function) in NOT_OUTPUTS:
                continue
            unexplained.append(f"{rel}:{call.lineno} ({function}): {ast.unparse(call)}")
    assert not unexplained, "write these with rnnpipe.io:\n" + "\n".join(unexplained)


def test_the_check_finds_writers():
    """The AST check is not vacuous: it sees each kind of write."""
    code = """
def f(path, df, fig, np):
    path.write_text("x")
    open(path, "w")
    open(path, mode="ab")
    df.to_csv(path)
    fig.savefig(path)
    np.save(path, df)
    json.dump({}, open(path))
    open(path)
    open(path, "r")
"""
    calls = [ast.unparse(c) for c, _ in _writes(ast.parse(code))]
    assert len(calls) == 7, calls
    assert "open(path)" not in calls and "open(path, 'r')" not in calls


def test_json_reports_are_written_with_write_json():
    """Reports are sorted-key JSON, so identical content gives identical bytes (DVC hashes)."""
    offenders = []
    for path in _source_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and ast.unparse(node.func) == "json.dump"
                    and path.name != "io.py"):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders
    assert json.loads(json.dumps({"b": 1, "a": 2}, sort_keys=True)) == {"a": 2, "b": 1}


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_outputs_are_world_readable(tmp_path):
    old = os.umask(0o077)
    try:
        write_json(tmp_path / "a.json", {})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o644 == 0o644
