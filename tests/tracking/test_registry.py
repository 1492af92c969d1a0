"""The promotion gate on real stores: a temporary SQLite store and a real `mlflow server` on
127.0.0.1 (with proxied artifacts), each given the same cases.

The models here are tiny pyfuncs that answer one label for every text, so each test knows what
the champion scores when the gate re-scores it on the candidate's test data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from rnnpipe.config import params_from_dict
from rnnpipe.tracking import registry
from rnnpipe.tracking.runs import RunLog, create_run
from rnnpipe.tracking.store import client

pytestmark = pytest.mark.slow
TEXTS = ["good", "great", "fine", "bad", "awful", "poor", "nice", "ugly"]
TRUTH = ["pos", "pos", "pos", "neg", "neg", "neg", "pos", "neg"]


def _one_label_model(label: str):
    import mlflow.pyfunc

    class Model(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return pd.DataFrame({"label": [label] * len(model_input)})

    return Model()


@pytest.fixture(scope="module", params=["sqlite", "server"])
def store(request, tmp_path_factory, server, port):
    """A retrying client on a fresh store: SQLite, or an `mlflow server` with proxied
    artifacts."""
    root = tmp_path_factory.mktemp(f"store-{request.param}")
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    if request.param == "sqlite":
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
        yield client(params_from_dict({}))
    else:
        base = f"http://127.0.0.1:{port()}"
        with server([Path(sys.executable).parent / "mlflow", "server", "--backend-store-uri",
                     f"sqlite:///{root / 'server.db'}", "--serve-artifacts",
                     "--artifacts-destination", root / "artifacts", "--host", "127.0.0.1",
                     "--port", base.rsplit(":", 1)[1], "--workers", "1"], f"{base}/health",
                    root / "server.log"):
            os.environ["MLFLOW_TRACKING_URI"] = base
            yield client(params_from_dict({}))
    if saved is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = saved


def candidate(store, label: str) -> tuple[RunLog, str]:
    """A run with a logged one-label model: (run, model URI)."""
    import mlflow

    run = RunLog(store, create_run(store, params_from_dict({}), "test"))
    with mlflow.start_run(run_id=run.run_id):
        info = mlflow.pyfunc.log_model(name="model", python_model=_one_label_model(label),
                                       pip_requirements=[])
    return run, info.model_uri


def gate(store, name: str, label: str, scores: dict, labels=("neg", "pos"), min_improvement=0.0,
         metric="accuracy") -> registry.Decision:
    run, uri = candidate(store, label)
    return registry.gate(store, run, name, uri, metric, min_improvement, scores, list(labels),
                         (TEXTS, TRUTH), "d41d8cd98f00b204e9800998ecf8427e")


def test_first_model_is_champion_and_the_decision_is_recorded(store) -> None:
    decision = gate(store, "first", "pos", {"accuracy": 0.5, "macro_f1": 0.33})
    assert decision.promoted and decision.role == "champion" and decision.version == "1"
    version = store.get_model_version_by_alias("first", "champion")
    tags = version.tags
    assert json.loads(tags["rnnpipe.labels"]) == ["neg", "pos"]
    assert tags["rnnpipe.data_md5"] == "d41d8cd98f00b204e9800998ecf8427e"
    assert tags["promotion"] == "champion" and tags["test_accuracy"] == "0.5"
    assert "first model" in tags["promotion_reason"]
    assert version.description.startswith("promoted to champion")


def test_same_labels_the_champion_is_rescored_on_the_candidates_data(store) -> None:
    # The champion answers "pos" for everything: accuracy 0.5 on TEXTS, whatever its own
    # recorded score was on its own (other) data.
    gate(store, "same", "pos", {"accuracy": 0.99, "macro_f1": 0.99})
    worse = gate(store, "same", "neg", {"accuracy": 0.45, "macro_f1": 0.45})
    assert not worse.promoted and worse.role == "candidate"
    assert "0.4500 < champion v1's 0.5000" in worse.reason and "re-scored" in worse.reason
    assert str(store.get_model_version_by_alias("same", "champion").version) == "1"
    assert str(store.get_model_version_by_alias("same", "candidate").version) == "2"
    tags = store.get_model_version("same", "2").tags
    assert float(tags["rnnpipe.gate.champion_score"]) == 0.5
    assert tags["rnnpipe.gate.champion_version"] == "1"
    better = gate(store, "same", "neg", {"accuracy": 0.75, "macro_f1": 0.75})
    assert better.promoted and "0.7500 >= champion v1's 0.5000" in better.reason
    assert str(store.get_model_version_by_alias("same", "champion").version) == "3"


def test_min_improvement_must_be_beaten(store) -> None:
    gate(store, "margin", "pos", {"accuracy": 0.5, "macro_f1": 0.3})
    close = gate(store, "margin", "neg", {"accuracy": 0.55, "macro_f1": 0.5},
                 min_improvement=0.1)
    assert not close.promoted and "+ min_improvement 0.1" in close.reason


def test_other_labels_never_replace_the_champion(store) -> None:
    gate(store, "task", "pos", {"accuracy": 0.5, "macro_f1": 0.33})
    other = gate(store, "task", "sports", {"accuracy": 0.99, "macro_f1": 0.99},
                 labels=("business", "sports"))
    assert other.version is None and other.role == "refused" and not other.promoted
    assert "['neg', 'pos']" in other.reason and "['business', 'sports']" in other.reason
    assert [str(v.version) for v in store.search_model_versions("name = 'task'")] == ["1"]
    assert str(store.get_model_version_by_alias("task", "champion").version) == "1"


def test_promote_by_hand_and_the_registry_listing(store) -> None:
    gate(store, "hand", "pos", {"accuracy": 0.5, "macro_f1": 0.33})
    gate(store, "hand", "neg", {"accuracy": 0.1, "macro_f1": 0.1})
    note = registry.promote_by_hand(store, "hand", "2", "the new one is safer")
    assert "promoted by hand" in note and "the new one is safer" in note
    assert str(store.get_model_version_by_alias("hand", "champion").version) == "2"
    assert store.get_model_version("hand", "1").tags["promotion"] == "replaced"
    rows = registry.registry_rows(store, ["hand"])
    assert [r["version"] for r in rows] == [2, 1]
    assert rows[0]["aliases"] == ["candidate", "champion"] and rows[0]["decision"] == "champion"
    with pytest.raises(Exception, match="no such registered model version"):
        registry.promote_by_hand(store, "hand", "9", "typo")


def test_concurrent_gates_are_serialised_by_a_lock_in_the_registry(store) -> None:
    """Two gates at once: the second waits for the first (the lock is a registered model, so
    this holds on a server without a shared file system), and the champion is the better."""
    gate(store, "race", "pos", {"accuracy": 0.5, "macro_f1": 0.33})
    inside = threading.Event()
    release = threading.Event()
    order = []

    def slow_holder() -> None:
        with registry.gate_lock(store, "race"):
            inside.set()
            order.append("first in")
            release.wait(10)
            order.append("first out")

    holder = threading.Thread(target=slow_holder)
    holder.start()
    assert inside.wait(30)
    assert "race--gate-lock" in {m.name for m in store.search_registered_models()}
    assert "race--gate-lock" not in {r["name"] for r in registry.registry_rows(store)}
    waiter = threading.Thread(target=lambda: (gate(store, "race", "neg",
                                                   {"accuracy": 0.75, "macro_f1": 0.7}),
                                              order.append("second done")))
    waiter.start()
    time.sleep(2)
    assert order == ["first in"]  # the second gate waits for the lock
    release.set()
    holder.join(30)
    waiter.join(120)
    assert order == ["first in", "first out", "second done"]
    assert str(store.get_model_version_by_alias("race", "champion").version) == "2"
    assert "race--gate-lock" not in {m.name for m in store.search_registered_models()}


def test_a_lock_left_by_a_dead_process_is_taken_over(store) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    import socket

    store.create_registered_model("dead--gate-lock", tags={
        "rnnpipe.lock.holder": f"{socket.gethostname()}:{dead}",
        "rnnpipe.lock.acquired": f"{time.time():.3f}"})
    decision = gate(store, "dead", "pos", {"accuracy": 0.5, "macro_f1": 0.33})
    assert decision.promoted
