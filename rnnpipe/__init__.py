"""rnnpipe: a reproducible, tracked LSTM text-classification pipeline.

Steps (one module each, plain functions over paths and typed params): `ingest`, `vocab`,
`train`, `evaluate`. `flows/` (Prefect) and `dvc.yaml` are thin adapters over them.
"""

import os

# Quiet, private defaults before any heavy import: TensorFlow's C++ log noise, and telemetry of
# every tool the pipeline drives. Users can still override each of them in their environment.
for _key, _value in {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "KERAS_BACKEND": "tensorflow",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # The ephemeral API starts in 6-10 s on an idle 2-core machine; a busy one needs longer.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}.items():
    os.environ.setdefault(_key, _value)

__version__ = "0.1.0"
