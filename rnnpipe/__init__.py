"""rnnpipe: a reproducible, tracked LSTM text-classification pipeline.

Layout (docs/ARCHITECTURE.md has the picture): `config` (params.yaml), `paths`, `errors`, `io`,
`datafiles` (what steps hand each other), `corpus/` (reading and splitting), `model/` (what the
served model runs, plus training), `steps/` (ingest, vocab, train, evaluate: one DVC stage
each), `tracking/` (MLflow), `predict`, `cli`. `flows/` (Prefect) and `dvc.yaml` are thin
adapters over the steps.
"""

__version__ = "0.2.0"
