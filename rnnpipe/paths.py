"""Every file and folder the pipeline reads or writes, named once.

Paths are relative to the project root (where `params.yaml` and `dvc.yaml` are), the working
directory of every step. `dvc.yaml` declares the same paths as stage dependencies and outputs;
`tests/test_paths.py` checks the two agree.
"""

from __future__ import annotations

from pathlib import Path

PARAMS_FILE = Path("params.yaml")
DVC_LOCK = Path("dvc.lock")

# Inputs: a corpus kept under corpus/ is versioned by DVC (`dvc add corpus/x.tsv`).
CORPUS_DIR = Path("corpus")

# ingest -> vocab
DATA_DIR = Path("data")
SPLITS = ("train", "val", "test")
DOWNLOAD_DIR = DATA_DIR / "download"


def split_file(split: str, data_dir: Path = DATA_DIR) -> Path:
    """`data/<split>.tsv`: `label<TAB>text`, one document a line."""
    return data_dir / f"{split}.tsv"


# vocab -> train, evaluate
IDS_DIR = DATA_DIR / "ids"
VOCAB_FILE = DATA_DIR / "vocab.json"


def ids_dir(split: str, ids_root: Path = IDS_DIR) -> Path:
    """`data/ids/<split>/`: the split's ragged token ids, memory-mappable `.npy` files:
    `ids.npy` (int32, every document's token ids end to end), `offsets.npy` (int64, where each
    document starts, plus the end) and `labels.npy` (int32 label ids, per `data/vocab.json`)."""
    return ids_root / split


# train -> evaluate
MODELS_DIR = Path("models")
MODEL_FILE = MODELS_DIR / "model.keras"
PREPROCESSING_FILE = MODELS_DIR / "preprocessing.json"  # how long texts are cut (max_len)

# Reports: small, text, kept in git (DVC `cache: false`), logged to MLflow.
REPORTS_DIR = Path("reports")
INGEST_REPORT = REPORTS_DIR / "ingest.json"
VOCAB_REPORT = REPORTS_DIR / "vocab.json"
TRAIN_REPORT = REPORTS_DIR / "train.json"
HISTORY_FILE = REPORTS_DIR / "history.csv"
METRICS_FILE = REPORTS_DIR / "metrics.json"
PER_CLASS_FILE = REPORTS_DIR / "per_class.json"
CLASS_REPORT_FILE = REPORTS_DIR / "classification_report.txt"
CONFUSION_FILE = REPORTS_DIR / "confusion.csv"
MISCLASSIFIED_FILE = REPORTS_DIR / "misclassified.tsv"
PLOTS_DIR = REPORTS_DIR / "plots"
CONFUSION_PLOT = PLOTS_DIR / "confusion_matrix.png"
CURVES_PLOT = PLOTS_DIR / "training_curves.png"

# Private state of one workspace: training checkpoints, the last run's summary.
STATE_DIR = Path(".rnnpipe")
CHECKPOINT_DIR = STATE_DIR / "checkpoint"

# Where provenance hashes are taken from (the DVC-tracked outputs a model depends on): the
# same entries `dvc.lock` records for them after a run.
PROVENANCE = (*(split_file(s) for s in SPLITS), IDS_DIR, VOCAB_FILE, MODEL_FILE,
              PREPROCESSING_FILE)
