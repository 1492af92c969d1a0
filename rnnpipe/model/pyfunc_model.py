"""MLflow "model from code" entry point: the logged model is built from this file, not a pickle.

`mlflow.pyfunc.log_model(python_model=<this file>, code_paths=[<rnnpipe with only its model
package>], ...)` copies this file and the model code into the logged model, so loading it needs
nothing outside the model: Keras, NumPy, pandas, jieba and MLflow.
"""

import mlflow

from rnnpipe.model.classifier import PyfuncClassifier

mlflow.models.set_model(PyfuncClassifier())
