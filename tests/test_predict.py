"""`rnnpipe predict` with the workspace's model (`-m local`): texts on the command line, and files
or stdin in every input format, streamed in batches, to CSV or JSONL that keep the input's
columns; scores when the input is labelled; malformed lines named by file and line; outputs
written atomically; and no accidental MLflow store outside a project."""

from __future__ import annotations

import csv
import json
import subprocess
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from rnnpipe import predict
from rnnpipe.console import Progress
from rnnpipe.datafiles import read_split
from rnnpipe.metrics import scores
from rnnpipe.predict import Predictor, predict_file

LABELS = ["business", "politics", "science", "sports", "tech"]
PROBS = [f"prob_{label}" for label in LABELS]
PREFIX = "rnnpipe: error: "


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, trained_workspace) -> Path:
    """A project folder with a model trained in-process on five English topics."""
    root = trained_workspace(tmp_path_factory.mktemp("project"), 2)
    (root / "params.yaml").write_text("vocab:\n  tokenizer: word\n", encoding="utf-8")
    return root


def local(workspace: Path, *args: str) -> list[str]:
    return ["predict", "-m", "local", "--project", str(workspace), *args]


def one_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith(PREFIX)]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0], result.stderr
    return errors[0][len(PREFIX):]


def check_predictions(rows: list[dict]) -> None:
    for row in rows:
        probs = [float(row[c]) for c in PROBS]
        assert sum(probs) == pytest.approx(1.0, abs=1e-3)
        assert row["predicted"] == LABELS[int(np.argmax(probs))]
        assert float(row["probability"]) == pytest.approx(max(probs), abs=1e-4)


def test_texts_on_the_command_line(workspace, run_cli):
    result = run_cli(local(workspace, "Shares rose after the bank report", "Goal!"))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == \
        f"model: {workspace / 'models' / 'model.keras'} (workspace)"
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["text"] for line in lines] == ["Shares rose after the bank report", "Goal!"]
    for line in lines:
        assert list(line["probabilities"]) == LABELS and line["label"] in LABELS
        assert line["label"] == max(line["probabilities"], key=line["probabilities"].get)


def test_labelled_tsv_to_csv_with_scores(workspace, tmp_path, run_cli):
    source = workspace / "data" / "test.tsv"
    out = tmp_path / "out.csv"
    result = run_cli(local(workspace, "-i", str(source), "-o", str(out)))
    assert result.returncode == 0, result.stderr
    with open(out, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    labels, texts = read_split(source)
    assert list(rows[0]) == ["label", "text", "predicted", "probability", *PROBS]
    assert [r["label"] for r in rows] == labels and [r["text"] for r in rows] == texts
    check_predictions(rows)
    expected = scores(np.array([LABELS.index(r["label"]) for r in rows]),
                      np.array([LABELS.index(r["predicted"]) for r in rows]), len(LABELS))
    assert (f"predict: on {len(rows)} labelled documents: accuracy {expected['accuracy']:.4f}, "
            f"macro-F1 {expected['macro_f1']:.4f}") in result.stderr
    assert "labels the model does not know" not in result.stderr
    assert result.stdout == ""


def test_text_lines_to_jsonl_on_stdout(workspace, tmp_path, run_cli):
    source = tmp_path / "texts.txt"
    source.write_text("The team scored a late goal\n\nNew chip for the startup\r\n",
                      encoding="utf-8")
    result = run_cli(local(workspace, "-i", str(source)))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["The team scored a late goal", "New chip for the startup"]
    assert list(rows[0]) == ["text", "predicted", "probability", *PROBS]
    check_predictions(rows)
    assert "labelled documents" not in result.stderr


def test_csv_keeps_its_columns(workspace, tmp_path, run_cli):
    source = tmp_path / "in.csv"
    source.write_text('id,text,source\n7,"Markets, banks and profit",wire\n'
                      '8,"A vote in parliament\nafter the election",paper\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = run_cli(local(workspace, "-i", str(source), "-o", str(out)))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["id"], r["source"]) for r in rows] == [("7", "wire"), ("8", "paper")]
    assert rows[1]["text"] == "A vote in parliament\nafter the election"
    assert list(rows[0])[:3] == ["id", "text", "source"]
    check_predictions(rows)


def test_labelled_jsonl_with_extra_fields_to_csv(workspace, tmp_path, run_cli):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in [
        {"id": 1, "text": "The coach and the team", "label": "sports"},
        {"id": 2, "text": "Scientists study cells", "label": "science", "lang": "en"},
        {"id": 3, "text": "Something else entirely", "label": "weather"},
    ]), encoding="utf-8")
    out = tmp_path / "out.csv"
    result = run_cli(local(workspace, "-i", str(source), "-o", str(out)))
    assert result.returncode == 0, result.stderr
    with open(out, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == ["1", "2", "3"]
    assert list(rows[0])[:3] == ["id", "text", "label"]
    check_predictions(rows)
    assert "on 3 labelled documents" in result.stderr
    assert "(labels the model does not know: weather)" in result.stderr


@pytest.mark.parametrize(("stdin", "fields"), [
    ("sports\tThe team won the league\nbusiness\tBank profit rose\n", ["label", "text"]),
    ('{"text": "The team won the league"}\n{"text": "Bank profit rose", "k": 1}\n', ["text"]),
    ("The team won the league\nBank profit rose\n", ["text"]),
])
def test_stdin(workspace, run_cli, monkeypatch, stdin, fields):
    result = run_cli(local(workspace, "-i", "-"), stdin=stdin)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["The team won the league", "Bank profit rose"]
    assert list(rows[0])[:len(fields)] == fields
    check_predictions(rows)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("in.jsonl", '{"text": "a"}\n{"text": "b"}\nnot json\n', "in.jsonl:3: not valid JSON"),
    ("in.jsonl", '{"text": "a"}\n["a list"]\n', "in.jsonl:2: a JSONL line needs a string 'text'"),
    ("in.jsonl", '{"text": "a"}\n{"text": 5}\n', "in.jsonl:2: a JSONL line needs a string 'text'"),
    ("in.tsv", "sports\tgoal\nbusiness\tbank\nno tab on this line\n",
     "in.tsv:3: expected label<TAB>text (the first line had a tab"),
    ("in.csv", "id,body\n1,x\n", "in.csv:1: a CSV input needs a 'text' column"),
    ("in.csv", "id,text\n1,x\n2\n", "in.csv:3: missing the text column"),
    ("in.txt", b"fine\n\xff\xfe broken\n", "in.txt: not UTF-8 text"),
])
def test_a_malformed_line_is_one_line_naming_it(workspace, tmp_path, run_cli, name, content,
                                                message):
    source = tmp_path / name
    if isinstance(content, bytes):
        source.write_bytes(content)
    else:
        source.write_text(content, encoding="utf-8")
    out = tmp_path / "out.csv"
    result = run_cli(local(workspace, "-i", str(source), "-o", str(out)))
    assert one_error(result).startswith(f"{tmp_path}/{message}")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_a_missing_input_file(workspace, tmp_path, run_cli):
    result = run_cli(local(workspace, "-i", str(tmp_path / "nope.tsv")))
    assert one_error(result) == f"{tmp_path / 'nope.tsv'}: no such file"


def test_output_is_written_atomically(workspace, tmp_path, run_cli, monkeypatch):
    """A failure after some batches were written leaves the old output, not half a new one."""
    monkeypatch.setattr(predict, "BATCH", 2)
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "a"}\n{"text": "b"}\n{"text": "c"}\n{"text": "d"}\n{oops\n',
                      encoding="utf-8")
    out = tmp_path / "out.jsonl"
    out.write_text("the previous output\n")
    result = run_cli(local(workspace, "-i", str(source), "-o", str(out)))
    assert one_error(result).startswith(f"{source}:5: not valid JSON")
    assert out.read_text() == "the previous output\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]


class FakePredictor(Predictor):
    """The Predictor interface without a model: fast enough to stream many thousand rows."""

    def __init__(self, calls: list[tuple[int, int]], read: list[int]) -> None:
        super().__init__(classifier=None, source="fake")
        self.calls, self.read = calls, read

    @property
    def labels(self) -> list[str]:
        return ["neg", "pos"]

    def probabilities(self, texts: list[str]) -> np.ndarray:
        self.calls.append((len(texts), self.read[0]))
        pos = np.array([len(t) % 2 for t in texts], dtype=float) * 0.5 + 0.25
        return np.stack([1 - pos, pos], axis=1)


def test_a_big_input_is_streamed_in_batches(tmp_path, monkeypatch):
    """20,000 lines: each batch is predicted and written before the next is read, so memory
    stays flat whatever the input's size."""
    batch = 500
    monkeypatch.setattr(predict, "BATCH", batch)
    lines = 20_000
    source = tmp_path / "big.tsv"
    with open(source, "w", encoding="utf-8") as fh:
        for i in range(lines):
            fh.write(f"{'pos' if i % 3 else 'neg'}\tdocument number {i} " + "x" * 200 + "\n")
    read = [0]
    original = predict.read_rows

    def counting(stream, name):
        for row in original(stream, name):
            read[0] += 1
            yield row

    monkeypatch.setattr(predict, "read_rows", counting)
    calls: list[tuple[int, int]] = []
    # A small run first: what it imports lazily (the classifier module, MLflow) is not data.
    (tmp_path / "small.txt").write_text("a\n", encoding="utf-8")
    predict_file(FakePredictor([], [0]), str(tmp_path / "small.txt"), str(tmp_path / "s.csv"))
    read[0] = 0
    out = tmp_path / "out.jsonl"
    tracemalloc.start()
    try:
        result = predict_file(FakePredictor(calls, read), str(source), str(out))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result["documents"] == result["labelled"] == lines
    assert [size for size, _ in calls] == [batch] * (lines // batch)
    # When batch k is predicted, only k + 1 batches have been read.
    assert [seen for _, seen in calls] == [batch * (k + 1) for k in range(lines // batch)]
    assert len(out.read_text(encoding="utf-8").splitlines()) == lines
    assert peak < 5 * 2**20, f"peak {peak / 2**20:.1f} MiB: the input is held, not streamed"


def test_progress_is_counted_per_batch(tmp_path, monkeypatch):
    monkeypatch.setattr(predict, "BATCH", 3)
    updates: list[int] = []
    monkeypatch.setattr(Progress, "update", lambda self, n=1: updates.append(n))
    source = tmp_path / "t.txt"
    source.write_text("a\nbb\nccc\nd\n", encoding="utf-8")
    calls: list = []
    result = predict_file(FakePredictor(calls, [0]), str(source), str(tmp_path / "o.csv"))
    assert result == {"documents": 4} and updates == [3, 1]


def test_input_format_detection():
    assert predict.input_format("a.csv", "text\n") == "csv"
    assert predict.input_format("a.JSONL", "x") == "jsonl"
    assert predict.input_format("a.ndjson", "x") == "jsonl"
    assert predict.input_format("-", ' {"text": 1}') == "jsonl"
    assert predict.input_format("-", "label\ttext") == "tsv"
    assert predict.input_format("a.txt", "one text") == "text"


# --- no accidental store --------------------------------------------------------------------------

def test_outside_a_project_without_a_store_nothing_is_created(tmp_path, in_dir, run_cli,
                                                              monkeypatch):
    in_dir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for args in (["predict", "hello"], ["predict", "-m", "models:/x@champion", "hello"]):
        message = one_error(run_cli(args))
        assert message.startswith("no project here (no params.yaml) and MLFLOW_TRACKING_URI is "
                                  "not set")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'missing.db'}")
    assert one_error(run_cli(["predict", "hello"])) == \
        f"{tmp_path / 'missing.db'}: no MLflow store there (MLFLOW_TRACKING_URI)"
    assert list(tmp_path.iterdir()) == []


def test_in_a_project_without_a_store_nothing_is_created(tmp_path, in_dir, run_cli):
    in_dir(tmp_path)
    (tmp_path / "params.yaml").write_text("{}\n")
    message = one_error(run_cli(["predict", "hello"]))
    assert message.startswith(f"{tmp_path / 'mlruns' / 'mlflow.db'}: no MLflow store here yet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_project_must_be_a_project(tmp_path, run_cli):
    result = run_cli(["predict", "--project", str(tmp_path), "-m", "local", "x"])
    assert one_error(result) == \
        f"{tmp_path / 'params.yaml'}: no such file: --project must be an rnnpipe project"


def test_overrides_apply_to_the_project_params(workspace, run_cli):
    result = run_cli(local(workspace, "-S", "vocab.tokenizer=char", "Bank profit"))
    assert result.returncode == 0  # valid overrides are accepted (the model's own vocabulary
    # still decides its tokenizer)
    assert json.loads(result.stdout)["text"] == "Bank profit"
    result = run_cli(local(workspace, "-S", "vocab.tokenizer=spacy", "x"))
    assert one_error(result).startswith("vocab.tokenizer: must be one of")
