"""Keras on TensorFlow, imported quietly: the one place the model code gets `keras` from.

TensorFlow prints two notices while it loads ("oneDNN custom operations are on...", and absl's
"All log messages before absl::InitializeLog()...") straight to file descriptor 2 from C++, before
its log settings exist, so `TF_CPP_MIN_LOG_LEVEL` cannot hide them: every process that loads the
model (each step, `rnnpipe predict`, `mlflow models serve`) printed them. They are filtered here
while TensorFlow imports; anything else it prints still reaches stderr.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

_NOTICES = re.compile(r"oneDNN custom operations are on|before absl::InitializeLog\(\) is called")


def _import_tensorflow_quietly() -> None:
    if "tensorflow" in sys.modules:
        return
    # setdefault: a user's own settings win. The model is written for the TensorFlow backend.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (an embedding host): import as is
        import tensorflow

        del tensorflow
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow

            del tensorflow
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        text = captured.read().decode("utf-8", errors="replace")
    sys.stderr.write("".join(line for line in text.splitlines(keepends=True)
                             if not _NOTICES.search(line)))


_import_tensorflow_quietly()

import tensorflow as tf  # noqa: E402

# "N out of the last N calls to ... triggered tf.function retracing": batches cut to their
# longest document come in a few widths, each traced once, by design.
tf.get_logger().setLevel("ERROR")

import keras  # noqa: E402  (after TensorFlow, which it loads as its backend)
from keras import ops  # noqa: E402

__all__ = ["keras", "ops"]
