"""A record users can trust, in one workspace that follows the README's "Bring your own data"
after a first run: a Chinese two-class corpus (`dvc repro`), then an English five-class corpus
`dvc add`ed beside it and the params pointed at it (`rnnpipe run`).

- Each dataset is its own lineage in the registry (`register.model_name: auto`): the Chinese
  champion keeps answering Chinese, the workspace's `rnnpipe predict` answers with the English
  model; with one fixed name for both, the gate refuses the other label set.
- Each run's provenance (`dvc.md5.<path>`) is what `dvc.lock` records after that run, and the
  model hash is the hash of the model file the run logged.
- A stage that fails on bad data fails `rnnpipe run` with the step's own one line, no traceback,
  no retry, and a FAILED MLflow run that names the step.

The gate with the fixed name runs the evaluate step by hand (`rnnpipe evaluate -S
register.model_name=shared`) after each pipeline run: the same gate, without training twice.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from rnnpipe.paths import PROVENANCE

pytestmark = pytest.mark.slow

ZH_TEXT = "质量很好，非常满意"
EN_TEXT = "The coach says the team will score a goal in the league match."
ZH_LABELS = ["neg", "pos"]
EN_LABELS = ["business", "politics", "science", "sports", "tech"]



@dataclass
class Run:
    """One execution in the workspace: its MLflow run, and `dvc.lock` right after it."""

    run_id: str
    status: str
    tags: dict[str, str]
    lock: str
    output: str
    returncode: int


@dataclass
class Workspace:
    root: Path
    sh: Callable[..., subprocess.CompletedProcess]
    runs: dict[str, Run] = field(default_factory=dict)

    @property
    def store(self) -> str:
        return f"sqlite:///{self.root / 'mlruns' / 'mlflow.db'}"

    @property
    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(self.store)

    def run_ids(self) -> set[str]:
        db = self.root / "mlruns" / "mlflow.db"
        if not db.exists():
            return set()
        client = self.client
        experiment = client.get_experiment_by_name("rnnpipe")
        return {r.info.run_id for r in client.search_runs([experiment.experiment_id])} \
            if experiment else set()

    def execute(self, name: str, cmd: list[str], check: bool = True) -> Run:
        """Run `cmd` in the workspace; it must record exactly one new MLflow run."""
        before = self.run_ids()
        result = self.sh(cmd, self.root, check=check, timeout=900)
        (new,) = self.run_ids() - before
        tracked = self.client.get_run(new)
        run = Run(new, tracked.info.status, tracked.data.tags,
                  (self.root / "dvc.lock").read_text(encoding="utf-8"),
                  result.stdout + result.stderr, result.returncode)
        self.runs[name] = run
        return run


def set_params(root: Path, **sections: dict) -> None:
    path = root / "params.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for section, values in sections.items():
        data[section].update(values)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, new_project, corpora, sh) -> Workspace:
    root = new_project(tmp_path_factory.mktemp("record") / "project", "corpus/reviews.tsv",
                       "jieba")
    corpora.write(root / "corpus" / "reviews.tsv", corpora.zh())
    sh(["dvc", "add", "corpus/reviews.tsv"], root)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "Chinese reviews"], root)
    ws = Workspace(root, sh)
    ws.execute("zh", ["dvc", "repro"])
    ws.execute("zh-shared", ["rnnpipe", "evaluate", "-S", "register.model_name=shared"])

    # README, "Bring your own data": the English corpus beside it, the params pointed at it.
    corpora.write(root / "corpus" / "news.tsv", corpora.en())
    sh(["dvc", "add", "corpus/news.tsv"], root)
    set_params(root, ingest={"source": "corpus/news.tsv"}, vocab={"tokenizer": "word"})
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "English news"], root)
    ws.execute("en", ["rnnpipe", "run"])
    ws.execute("en-shared", ["rnnpipe", "evaluate", "-S", "register.model_name=shared"])
    return ws


def lock_outs(lock_text: str) -> dict[str, str]:
    """`{path: md5}` of every output in a `dvc.lock`, as the stage that wrote it recorded it."""
    lock = yaml.safe_load(lock_text)
    return {entry["path"]: entry["md5"] for stage in lock["stages"].values()
            for entry in stage.get("outs", []) if "md5" in entry}


def provenance(run: Run) -> dict[str, str]:
    return {k.removeprefix("dvc.md5."): v for k, v in run.tags.items()
            if k.startswith("dvc.md5.")}


def logged_model_md5(ws: Workspace, run: Run, tmp_path: Path, forget_tracking_uri) -> str:
    """The MD5 of `model.keras` inside the model the run logged."""
    import mlflow

    mlflow.set_tracking_uri(ws.store)  # models:/ resolves in the global store only
    try:
        local = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=run.tags["rnnpipe.model_uri"], dst_path=str(tmp_path)))
    finally:
        forget_tracking_uri()
    return hashlib.md5((local / "artifacts" / "model.keras").read_bytes()).hexdigest()


def predict(ws: Workspace, *args: str) -> tuple[dict, str]:
    result = ws.sh(["rnnpipe", "predict", *args], ws.root, timeout=300)
    (line,) = result.stdout.splitlines()
    return json.loads(line), result.stderr


# --- two datasets, two lineages ----------------------------------------------------------------

def test_each_dataset_is_its_own_lineage(workspace: Workspace) -> None:
    client = workspace.client
    names = {m.name for m in client.search_registered_models()}
    assert {n for n in names if n.startswith("rnnpipe-")} == {"rnnpipe-reviews", "rnnpipe-news"}
    assert not [n for n in names if n.endswith("--gate-lock")]  # every gate released its lock
    for run, name in ((workspace.runs["zh"], "rnnpipe-reviews"),
                      (workspace.runs["en"], "rnnpipe-news")):
        assert run.status == "FINISHED", run.tags.get("error")
        assert run.tags["rnnpipe.registered_model"] == name
        assert run.tags["rnnpipe.promotion"] == "champion"
        champion = client.get_model_version_by_alias(name, "champion")
        assert champion.run_id == run.run_id
    labels = {name: json.loads(client.get_model_version_by_alias(name, "champion")
                               .tags["rnnpipe.labels"])
              for name in ("rnnpipe-reviews", "rnnpipe-news")}
    assert labels == {"rnnpipe-reviews": ZH_LABELS, "rnnpipe-news": EN_LABELS}


def test_the_chinese_champion_still_answers_chinese(workspace: Workspace) -> None:
    answer, stderr = predict(workspace, "-m", "models:/rnnpipe-reviews@champion", ZH_TEXT)
    assert "model: models:/rnnpipe-reviews@champion" in stderr
    assert answer["text"] == ZH_TEXT
    assert answer["label"] in ZH_LABELS
    assert sorted(answer["probabilities"]) == ZH_LABELS
    assert sum(answer["probabilities"].values()) == pytest.approx(1, abs=1e-3)


def test_predict_in_the_workspace_answers_with_its_english_model(workspace: Workspace) -> None:
    answer, stderr = predict(workspace, EN_TEXT)
    assert "model: models:/rnnpipe-news@champion (v1)" in stderr
    assert answer["label"] in EN_LABELS
    assert sorted(answer["probabilities"]) == EN_LABELS


def test_one_fixed_name_for_both_refuses_the_other_label_set(workspace: Workspace) -> None:
    first, second = workspace.runs["zh-shared"], workspace.runs["en-shared"]
    assert first.status == second.status == "FINISHED"
    assert first.tags["rnnpipe.promotion"] == "champion"
    assert second.tags["rnnpipe.promotion"] == "refused"
    assert second.tags["rnnpipe.registered_version"] == ""
    reason = second.tags["rnnpipe.promotion_reason"]
    assert str(ZH_LABELS) in reason and str(EN_LABELS) in reason, reason
    assert "register: shared refused: " in second.output
    client = workspace.client
    assert [str(v.version) for v in client.search_model_versions("name = 'shared'")] == ["1"]
    champion = client.get_model_version_by_alias("shared", "champion")
    assert (str(champion.version), champion.run_id) == ("1", first.run_id)


# --- provenance --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["zh", "en"])  # `dvc repro` first, then `rnnpipe run`
def test_provenance_is_what_dvc_lock_records_after_the_run(workspace: Workspace, name: str,
                                                            tmp_path: Path,
                                                            forget_tracking_uri) -> None:
    run = workspace.runs[name]
    assert run.tags["rnnpipe.entry_point"] == ("evaluate" if name == "zh" else "prefect")
    tags = provenance(run)
    assert set(tags) == {p.as_posix() for p in PROVENANCE}
    outs = lock_outs(run.lock)
    for path, md5 in tags.items():
        assert md5 == outs[path], path
    # The model the run logged is the file those hashes describe.
    assert tags["models/model.keras"] == logged_model_md5(workspace, run, tmp_path,
                                                          forget_tracking_uri)


def test_the_second_run_records_its_own_data_not_the_first_runs(workspace: Workspace) -> None:
    zh, en = provenance(workspace.runs["zh"]), provenance(workspace.runs["en"])
    # Other data, another model (preprocessing.json, `max_len` and `truncate`, is the same).
    assert all(zh[path] != en[path] for path in zh if path != "models/preprocessing.json"), \
        (zh, en)
    assert workspace.runs["en"].tags["prefect.flow_run_id"]
    assert "dvc.lock" in {a.path for a in workspace.client.list_artifacts(
        workspace.runs["en"].run_id)}


# --- a stage that fails on bad data ------------------------------------------------------------

def test_a_stage_failing_on_bad_data_is_one_line_exit_2_not_retried_and_a_failed_run(
        workspace: Workspace) -> None:
    # Last: it changes the workspace's params (restored) and removes the vocab stage's outputs.
    params = (workspace.root / "params.yaml").read_bytes()
    try:
        failed = workspace.execute("bad-vocab", ["rnnpipe", "run", "-S",
                                                 "vocab.min_count=1000000"], check=False)
    finally:
        (workspace.root / "params.yaml").write_bytes(params)
    output = failed.output
    assert failed.returncode == 2, output
    assert "Traceback" not in output, output
    last = output.strip().splitlines()[-1]
    assert last.startswith("rnnpipe: error: vocab: the vocabulary is empty: no train token "
                           "occurs vocab.min_count=1000000 times"), output
    # Not retried: the stage ran once (a retry would run it again, after 2 s).
    assert output.count("Running stage 'vocab'") == 1, output
    assert "AwaitingRetry" not in output and "Retrying" not in output, output
    assert failed.status == "FAILED"
    assert failed.tags["rnnpipe.failed_step"] == "vocab"
    assert failed.tags["error"] == last.removeprefix("rnnpipe: error: ")
