"""The sweep (`rnnpipe sweep`, the Prefect flow rnnpipe-sweep on a local Dask cluster): trials
planned from `params.yaml`, ranked on validation (test is reported, never used to choose), run in
scratch copies that leave the workspace byte for byte as it was, and `--apply-best`, which makes
the winner the workspace's state without training again.

Two real sweeps share one tiny project whose corpus is `dvc add`ed under `corpus/`: the first
with `--apply-best` on a project that has never run (afterwards it has the winner's outputs),
the second with `-S train.max_epochs=1` on that workspace, which must not change.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from flows.sweep import format_trials, plan_trials, ranking_key, report_best, trial_params
from rnnpipe.config import SweepParams, params_from_dict
from rnnpipe.errors import ParamsError

CORPUS = "corpus/reviews.tsv"
GRID = {"train.learning_rate": [0.003, 0.05]}
SKIPPED = {".git", "mlruns"}  # and .dvc/cache, .dvc/tmp: DVC's own state


# --- ranking: validation chooses, test is reported ---------------------------------------------

def trial(number: int, val: float | None, test: float | None = None) -> dict[str, Any]:
    metrics = None if val is None else {
        "val": {"accuracy": val, "macro_f1": val - 0.01},
        "test": {"accuracy": test, "macro_f1": test - 0.01}}
    return {"trial": number, "overrides": {"train.learning_rate": number / 1000},
            "run_id": f"run-{number}", "status": "FINISHED" if metrics else "FAILED",
            "metrics": metrics}


# Trial 2 is best on validation, trial 3 on test: the sweep must choose 2.
ROWS = [trial(1, 0.70, 0.70), trial(2, 0.90, 0.60), trial(3, 0.80, 0.95), trial(4, None)]



@pytest.mark.parametrize("metric", ["val_macro_f1", "val_accuracy"])
def test_trials_are_ranked_by_validation_not_test(metric: str) -> None:
    ranked = sorted(ROWS, key=ranking_key(metric))
    assert [r["trial"] for r in ranked] == [2, 3, 1, 4]  # a failed trial last


def test_the_table_says_what_ranked_the_trials() -> None:
    ranked = sorted(ROWS, key=ranking_key("val_macro_f1"))
    text = format_trials(ranked, ["train.learning_rate"], "val_macro_f1")
    lines = text.splitlines()
    assert lines[0] == ("trials ranked by val_macro_f1 (validation; test is reported, not used "
                        "to choose):")
    assert lines[1].split() == ["rank", "trial", "train.learning_rate", "val_accuracy",
                                "val_macro_f1", "test_accuracy", "test_macro_f1", "status",
                                "mlflow", "run"]
    first, *_, failed = (line.split() for line in lines[2:])
    assert first == ["1", "2", "0.002", "0.9000", "0.8900", "0.6000", "0.5900", "FINISHED",
                     "run-2"]
    assert failed == ["-", "4", "0.004", "-", "-", "-", "-", "FAILED", "run-4"]


def test_the_winner_reported_is_the_validation_winner(capsys) -> None:
    logged: dict[str, Any] = {}
    parent = SimpleNamespace(log_metrics=logged.update, set_tags=logged.update)
    best = sorted(ROWS, key=ranking_key("val_macro_f1"))[0]
    report_best(parent, best, "val_macro_f1", 3, 4)
    assert logged["rnnpipe.sweep.best_trial"] == 2
    assert logged["rnnpipe.sweep.best_run_id"] == "run-2"
    assert (logged["best_val_macro_f1"], logged["best_test_macro_f1"]) == (0.89, 0.59)
    assert (logged["trials_finished"], logged["trials_failed"]) == (3, 1)
    assert "best: trial 2 (train.learning_rate=0.002): val_macro_f1 0.8900 on validation" in \
        capsys.readouterr().out


def test_plan_trials_grid_random_and_bad_specs() -> None:
    grid = {"train.learning_rate": [0.1, 0.2], "train.lstm_units": [[8], [16], [32]]}
    trials = plan_trials(SweepParams(grid=grid))
    assert len(trials) == 6 and trials[0] == {"train.learning_rate": 0.1, "train.lstm_units": [8]}
    drawn = plan_trials(SweepParams(method="random", grid=grid, trials=4, seed=3))
    assert len(drawn) == 4 and all(t in trials for t in drawn)
    assert len({str(t) for t in drawn}) == 4
    assert drawn == plan_trials(SweepParams(method="random", grid=grid, trials=4, seed=3))
    assert len(plan_trials(SweepParams(method="random", grid=grid, trials=50))) == 6
    with pytest.raises(ParamsError, match=r"^sweep\.metric: "):
        SweepParams(grid=grid, metric="test_macro_f1")  # never chosen on test
    with pytest.raises(ParamsError, match=r"^sweep\.grid\.ingest\.val_size: "):
        SweepParams(grid={"ingest.val_size": [0.1, 0.2]})  # every trial on the same splits
    with pytest.raises(ParamsError, match=r"^sweep\.grid: "):
        SweepParams(grid={})


def test_a_bad_trial_value_names_the_trial_and_the_key() -> None:
    base = params_from_dict({}).to_dict()
    assert trial_params(base, {"train.max_epochs": 3}).train.max_epochs == 3
    with pytest.raises(ParamsError, match=r"train\.max_epochs=0.*train\.max_epochs: must be >= 1"):
        trial_params(base, {"train.max_epochs": 0})


# --- real sweeps -------------------------------------------------------------------------------

def tree_hashes(root: Path) -> dict[str, str]:
    """`{relative path: md5}` of every file of the working tree but git's, DVC's own state and
    the MLflow store."""
    hashes = {}
    for folder, dirs, files in os.walk(root):
        rel = Path(folder).relative_to(root)
        dirs[:] = sorted(d for d in dirs if not (rel == Path(".") and d in SKIPPED)
                         and not (rel == Path(".dvc") and d in ("cache", "tmp")))
        for name in files:
            path = Path(folder) / name
            hashes[(rel / name).as_posix()] = hashlib.md5(path.read_bytes()).hexdigest()
    return hashes


def mlflow_client(project: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")


def sweep_runs(project: Path) -> tuple[Any, list[Any]]:
    """The newest sweep's parent run and its trial runs."""
    client = mlflow_client(project)
    experiment = client.get_experiment_by_name("rnnpipe").experiment_id
    parents = client.search_runs([experiment], "tags.`rnnpipe.sweep` = 'parent'",
                                 order_by=["attributes.start_time DESC"])
    parent = parents[0]
    trials = client.search_runs([experiment],
                                f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return parent, trials


def check_sweep(project: Path, output: str,
                rates: list[float] = GRID["train.learning_rate"]) -> tuple[Any, Any]:
    """A finished sweep in MLflow: a parent run, a nested run per trial with validation and test
    scores, the winner the best on validation and the only version the sweep registered.
    Returns (parent, best trial)."""
    parent, trials = sweep_runs(project)
    assert parent.info.status == "FINISHED", parent.data.tags.get("error")
    assert sorted(float(t.data.params["train.learning_rate"]) for t in trials) == \
        sorted(rates)
    for t in trials:
        assert t.info.status == "FINISHED", t.data.tags.get("error")
        assert t.data.tags["rnnpipe.sweep"] == "trial"
        assert {"val_accuracy", "val_macro_f1", "test_accuracy", "test_macro_f1"} <= \
            set(t.data.metrics)
    best = next(t for t in trials
                if t.info.run_id == parent.data.tags["rnnpipe.sweep.best_run_id"])
    assert best.data.metrics["val_macro_f1"] == max(t.data.metrics["val_macro_f1"]
                                                    for t in trials)
    assert parent.data.metrics["best_val_macro_f1"] == best.data.metrics["val_macro_f1"]
    assert parent.data.metrics["best_test_macro_f1"] == best.data.metrics["test_macro_f1"]
    assert "trials ranked by val_macro_f1" in output
    # Exactly one version from this sweep: the best trial's.
    client = mlflow_client(project)
    trial_ids = {t.info.run_id for t in trials}
    registered = [v for v in client.search_model_versions("name = 'rnnpipe-reviews'")
                  if v.run_id in trial_ids]
    assert [v.run_id for v in registered] == [best.info.run_id]
    assert [t.info.run_id for t in trials if "rnnpipe.registered_model" in t.data.tags] == [
        best.info.run_id]  # trials do not register themselves: the sweep gates the best
    assert best.data.tags["rnnpipe.registered_model"] == "rnnpipe-reviews"
    return parent, best


@pytest.fixture(scope="module")
def project(tmp_path_factory, new_project, corpora, sh) -> Path:
    """A tiny project (character tokens), its corpus `dvc add`ed under corpus/, never run."""
    root = new_project(tmp_path_factory.mktemp("sweep") / "project", CORPUS, "char",
                       params={"sweep": {"grid": GRID, "workers": 2,
                                         "metric": "val_macro_f1"}})
    corpora.write(root / CORPUS, corpora.zh())
    sh(["dvc", "add", CORPUS], root)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "our corpus, versioned"], root)
    return root


@pytest.fixture(scope="module")
def applied(project: Path, sh) -> SimpleNamespace:
    """`rnnpipe sweep --apply-best` in the project."""
    result = sh(["rnnpipe", "sweep", "--apply-best"], project, timeout=1200)
    return SimpleNamespace(output=result.stdout + result.stderr)


@pytest.mark.slow
def test_apply_best_makes_the_winner_the_workspace_without_training(
        project: Path, applied: SimpleNamespace, sh) -> None:
    # The corpus is a `dvc add`ed file under corpus/ (a stage of its own, without a name).
    assert (project / f"{CORPUS}.dvc").is_file()
    parent, best = check_sweep(project, applied.output)
    assert "sweep: applied the best trial to" in applied.output
    # The winner's params are the workspace's, and its outputs are checked out: DVC agrees.
    params = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    assert params["train"]["learning_rate"] == float(best.data.params["train.learning_rate"])
    status = sh(["dvc", "status"], project).stdout
    assert "up to date" in status, status
    # The model is the one the winning trial trained and logged, not a new one.
    model = project / "models" / "model.keras"
    assert hashlib.md5(model.read_bytes()).hexdigest() == \
        best.data.tags["dvc.md5.models/model.keras"]
    lock = yaml.safe_load((project / "dvc.lock").read_text(encoding="utf-8"))
    assert set(lock["stages"]) == {"ingest", "vocab", "train", "evaluate"}
    # Nothing ran in the workspace: the only runs are the sweep's.
    client = mlflow_client(project)
    experiment = client.get_experiment_by_name("rnnpipe").experiment_id
    assert len(client.search_runs([experiment])) == 1 + len(GRID["train.learning_rate"])
    champion = client.get_model_version_by_alias("rnnpipe-reviews", "champion")
    assert (str(champion.version), champion.run_id) == ("1", best.info.run_id)


@pytest.mark.slow
def test_a_sweep_leaves_the_workspace_byte_for_byte(project: Path, applied: SimpleNamespace,
                                                    sh) -> None:
    before, status = tree_hashes(project), sh(["dvc", "status"], project).stdout
    assert {"params.yaml", "dvc.lock", "data/train.tsv", "models/model.keras",
            "reports/metrics.json", CORPUS} <= set(before)
    previous, _ = sweep_runs(project)
    # One trial this time (the first sweep ran two at once): what matters is the workspace.
    result = sh(["rnnpipe", "sweep", "-S", "train.max_epochs=1",
                 "-S", "sweep.grid={train.learning_rate: [0.01]}"], project, timeout=1200)
    output = result.stdout + result.stderr
    assert tree_hashes(project) == before
    assert sh(["dvc", "status"], project).stdout == status
    assert "rnnpipe sweep --apply-best next time" in output
    parent, best = check_sweep(project, output, rates=[0.01])
    assert parent.info.run_id != previous.info.run_id
    assert best.data.params["train.max_epochs"] == "1"  # -S applies to the sweep's trials


@pytest.mark.slow
@pytest.mark.parametrize(("value", "message"), [
    ("sweep.grid={ingest.val_size: [0.1]}",
     "rnnpipe: error: sweep.grid.ingest.val_size: a trial can vary vocab, train, evaluate keys"),
    ("sweep.grid={train.max_epochs: [2, 0]}",
     "rnnpipe: error: sweep.grid: the trial train.max_epochs=0 is invalid: train.max_epochs: "
     "must be >= 1, got 0"),
])
def test_user_errors_are_one_line_and_exit_2(project: Path, sh, value: str,
                                             message: str) -> None:
    result = sh(["rnnpipe", "sweep", "-S", value], project, check=False, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith(message), result.stderr
