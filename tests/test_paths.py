"""`rnnpipe/paths.py` and `dvc.yaml` name the same files: each stage's outputs and metrics are the
paths its step writes, each data dependency is an earlier stage's output, and every code
dependency exists."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rnnpipe import paths
from rnnpipe.paths import (
    CLASS_REPORT_FILE,
    CONFUSION_FILE,
    CONFUSION_PLOT,
    CORPUS_DIR,
    CURVES_PLOT,
    HISTORY_FILE,
    IDS_DIR,
    INGEST_REPORT,
    METRICS_FILE,
    MISCLASSIFIED_FILE,
    MODEL_FILE,
    PER_CLASS_FILE,
    PLOTS_DIR,
    PREPROCESSING_FILE,
    PROVENANCE,
    REPORTS_DIR,
    SPLITS,
    TRAIN_REPORT,
    VOCAB_FILE,
    VOCAB_REPORT,
    ids_dir,
    split_file,
)

REPO = Path(__file__).resolve().parent.parent
DVC = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))
STAGES = DVC["stages"]


def entries(stage: str, kind: str) -> set[Path]:
    """The paths of a stage's `deps`, `outs` or `metrics` (an entry is a path or {path: opts})."""
    found = set()
    for item in STAGES[stage].get(kind, []):
        found.add(Path(item if isinstance(item, str) else next(iter(item))))
    return found


def data_deps(stage: str) -> set[Path]:
    return {p for p in entries(stage, "deps") if p.parts[0] != "rnnpipe"}


def produced(stage: str) -> set[Path]:
    return entries(stage, "outs") | entries(stage, "metrics")


def uncached(stage: str) -> set[Path]:
    return {Path(next(iter(item))) for kind in ("outs", "metrics")
            for item in STAGES[stage].get(kind, [])
            if isinstance(item, dict) and next(iter(item.values())).get("cache") is False}


def test_the_stages_are_the_four_steps_in_order():
    assert list(STAGES) == ["ingest", "vocab", "train", "evaluate"]
    for name, stage in STAGES.items():
        assert stage["cmd"] == f"python -m rnnpipe {name}"
        assert stage["params"] == [name]


def test_ingest():
    assert entries("ingest", "outs") == {split_file(s) for s in SPLITS}
    assert entries("ingest", "metrics") == {INGEST_REPORT}
    assert data_deps("ingest") == {CORPUS_DIR}


def test_vocab():
    assert data_deps("vocab") == {split_file(s) for s in SPLITS}
    assert entries("vocab", "outs") == {IDS_DIR, VOCAB_FILE}
    assert entries("vocab", "metrics") == {VOCAB_REPORT}
    assert {ids_dir(s).parent for s in SPLITS} == {IDS_DIR}


def test_train():
    # Not the test split: changing it must not re-train.
    assert data_deps("train") == {ids_dir("train"), ids_dir("val"), VOCAB_FILE,
                                  Path("embeddings")}
    assert entries("train", "outs") == {MODEL_FILE, PREPROCESSING_FILE, HISTORY_FILE}
    assert entries("train", "metrics") == {TRAIN_REPORT}
    assert PREPROCESSING_FILE.parent == MODEL_FILE.parent  # train writes it beside the model


def test_evaluate():
    assert data_deps("evaluate") == {MODEL_FILE, PREPROCESSING_FILE, IDS_DIR, VOCAB_FILE,
                                     split_file("test")}
    assert entries("evaluate", "metrics") == {METRICS_FILE}
    assert entries("evaluate", "outs") == {PER_CLASS_FILE, CLASS_REPORT_FILE, CONFUSION_FILE,
                                           MISCLASSIFIED_FILE, PLOTS_DIR}
    # evaluate writes every report as `reports / <name>` (its `reports` argument).
    for path in (METRICS_FILE, PER_CLASS_FILE, CLASS_REPORT_FILE, CONFUSION_FILE,
                 MISCLASSIFIED_FILE, PLOTS_DIR):
        assert path.parent == REPORTS_DIR
    assert CONFUSION_PLOT.parent == CURVES_PLOT.parent == PLOTS_DIR


def test_reports_are_kept_in_git_not_the_cache():
    for stage in STAGES:
        for path in produced(stage):
            if path.parts[0] == REPORTS_DIR.name:
                assert path in uncached(stage), f"{stage}: {path} should be cache: false"
            else:
                assert path not in uncached(stage), f"{stage}: {path}"


def test_every_data_dependency_is_an_earlier_output_or_an_input_folder():
    made: set[Path] = set()
    for stage in STAGES:
        for dep in data_deps(stage):
            assert dep in (CORPUS_DIR, Path("embeddings")) or any(
                dep == out or out in dep.parents for out in made), f"{stage}: {dep}"
        made |= produced(stage)


def test_no_path_is_written_by_two_stages():
    seen: dict[Path, str] = {}
    for stage in STAGES:
        for path in produced(stage):
            assert path not in seen, f"{path}: {seen.get(path)} and {stage}"
            seen[path] = stage


@pytest.mark.parametrize("stage", list(STAGES))
def test_code_dependencies_exist(stage):
    code = [p for p in entries(stage, "deps") if p.parts[0] == "rnnpipe"]
    assert Path(f"rnnpipe/steps/{stage}.py") in code
    for path in code:
        assert (REPO / path).exists(), f"dvc.yaml: {stage} depends on {path}, which is missing"


def test_provenance_is_dvc_tracked_outputs():
    """What a logged model's provenance hashes are the entries dvc.lock records."""
    outs = set().union(*(entries(s, "outs") for s in STAGES))
    for path in PROVENANCE:
        assert path in outs, path


def test_plots_name_the_reports_evaluate_and_train_write():
    named = set()
    for plot in DVC["plots"]:
        key, spec = next(iter(plot.items())) if isinstance(plot, dict) else (plot, None)
        if spec is None:
            named.add(Path(key))
        else:
            named |= {Path(p) for p in spec["y"]}
    assert named == {HISTORY_FILE, CONFUSION_FILE, CONFUSION_PLOT, CURVES_PLOT}


def test_every_path_is_relative_to_the_project():
    """No output may contain the checkout's absolute path (steps run in the project's root)."""
    for name in dir(paths):
        value = getattr(paths, name)
        for path in value if isinstance(value, tuple) else (value,):
            if isinstance(path, Path):
                assert not path.is_absolute(), name
