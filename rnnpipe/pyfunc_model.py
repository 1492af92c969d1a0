"""MLflow "model from code" entry point: the logged model is built from this file, not a pickle.

`mlflow.pyfunc.log_model(python_model="rnnpipe/pyfunc_model.py", code_paths=["rnnpipe"], ...)`
copies this file and the package into the model, so loading it needs nothing outside the model.
"""

import mlflow

from rnnpipe.classifier import PyfuncClassifier

mlflow.models.set_model(PyfuncClassifier())
