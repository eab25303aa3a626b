"""`TabularModel`: a network trained by `mlpx train` together with its preprocessing, used
from Python on DataFrames, arrays or files.

    model = mlpx.TabularModel.load("iris_model")
    model.predict(df)            # class labels or values, as `mlpx predict` writes them
    model.predict_proba(df)      # one column per class, in model.classes_ order

The name says what it is: a model of a table (columns in, a column out), where `Sequential`
is a network of arrays; `load` mirrors `mlpx.load`, and `predict`/`predict_proba` follow
scikit-learn (labels, then probabilities), which is what a user of a trained table model
expects, while `network.predict` still gives the raw outputs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .columns import Table, TabularError
from .preprocessing import Preprocessing
from .reading import read_table, table_of
from .schema_file import preprocessing_from_json

MODEL_FILE = "model.safetensors"


def model_paths(model: str | os.PathLike) -> tuple[Path, Path]:
    """The checkpoint and its preprocessing file, from a training output directory or the
    checkpoint's path."""
    p = Path(model)
    if p.is_dir():
        p = p / MODEL_FILE
    if not p.exists():
        raise TabularError(f"no model at {str(p)!r}; give the --out directory of mlpx train "
                           f"or its {MODEL_FILE}")
    side = p.with_suffix(".json")
    if not side.exists():
        raise TabularError(f"{str(side)!r} is missing: a model of mlpx train needs the "
                           "preprocessing file written next to it")
    return p, side


class TabularModel:
    """A trained network and the preprocessing of its training table.

    Args:
        network: the `Sequential` whose inputs are the encoded features.
        preprocessing: the training table's schema, encodings and scales.

    Attributes:
        classes_: the class labels (classification), in the order of `predict_proba`'s
            columns; empty for a regression.
        feature_names_in_: the feature columns, in training order.
        target: the predicted column's name.
        task: "classification" or "regression".
    """

    def __init__(self, network: Any, preprocessing: Preprocessing) -> None:
        outputs = getattr(network.layers[-1], "units", preprocessing.n_outputs)
        if network.input_dim != preprocessing.n_inputs or outputs != preprocessing.n_outputs:
            raise TabularError(f"the network ({network.input_dim} inputs, {outputs} outputs) "
                               f"does not match the preprocessing ({preprocessing.n_inputs} "
                               f"inputs, {preprocessing.n_outputs} outputs)")
        self.network = network
        self.preprocessing = preprocessing

    @classmethod
    def load(cls, path: str | os.PathLike, backend: str = "cpu") -> TabularModel:
        """Load the `--out` directory of `mlpx train` (or its `model.safetensors`).

        Raises:
            TabularError: a missing or damaged checkpoint or preprocessing file, or two files
                that do not belong together.
        """
        from ..model import load
        from ..saving.container import CheckpointError

        checkpoint, side = model_paths(path)
        try:
            text = side.read_bytes()
        except OSError as e:
            raise TabularError(f"cannot read {str(side)!r}: {e.strerror or e}") from None
        pre = preprocessing_from_json(text, str(side))
        try:
            network = load(checkpoint, backend=backend)
        except CheckpointError as e:
            raise TabularError(str(e)) from None
        try:
            return cls(network, pre)
        except TabularError:
            raise TabularError(f"{str(checkpoint)!r} does not match its preprocessing file "
                               f"{str(side)!r} (inputs or outputs differ); train the model "
                               "again") from None

    @property
    def classes_(self) -> list[Any]:
        return list(self.preprocessing.classes)

    @property
    def feature_names_in_(self) -> list[str]:
        return self.preprocessing.feature_names

    @property
    def target(self) -> str:
        return self.preprocessing.target

    @property
    def task(self) -> str:
        return self.preprocessing.task

    def read(self, data: Any, sep: str | None = None, decimal: str = "auto",
             na_values: list[str] | tuple[str, ...] = ()) -> Table:
        """The data as a table read with the training schema: a file path (CSV/TSV, Parquet,
        .npy, .npz), a pandas DataFrame, a dict of columns, a NumPy structured array, or a
        2-D array whose columns are the features in training order. Cells equal to one of
        the training's `na_values` or these `na_values` are missing."""
        kinds = self.preprocessing.kinds()
        na = (*self.preprocessing.na_values, *na_values)
        if isinstance(data, (str, os.PathLike)):
            return read_table(data, sep=sep, decimal=decimal, kinds=kinds, na_values=na)
        return table_of(data, self.feature_names_in_, kinds, na_values=na)

    def transform(self, data: Any) -> np.ndarray:
        """The network's inputs: encoded, imputed and standardised float32 features."""
        return self.preprocessing.features_of(self.read(data))

    def predict(self, data: Any) -> np.ndarray:
        """Class labels (classification) or values in the target's units (regression), one
        per row. Text values the training rows did not hold warn (UnseenCategoryWarning)."""
        outputs = self.network.predict(self.transform(data))
        return self.outputs_to_predictions(outputs)

    def predict_proba(self, data: Any) -> np.ndarray:
        """Class probabilities, shape (rows, classes), columns in `classes_` order."""
        if self.task != "classification":
            raise TabularError("predict_proba: the model is a regression model; probabilities "
                               "exist for classification only")
        return np.asarray(self.network.predict_proba(self.transform(data)))

    def to_sklearn(self) -> Any:
        """This model as a fitted scikit-learn estimator, frozen (`fit` does nothing): a step
        of a `Pipeline`, with `predict`, `predict_proba` (classification), `score` (accuracy
        or R²) and `classes_`. Needs scikit-learn >= 1.6 (`pip install "mlpx[sklearn]"`)."""
        try:
            from .sklearn_export import frozen_estimator
        except ImportError as e:
            raise ImportError(f'to_sklearn needs scikit-learn >= 1.6 (pip install '
                              f'"mlpx[sklearn]"): {e}') from None
        return frozen_estimator(self)

    def outputs_to_predictions(self, outputs: np.ndarray) -> np.ndarray:
        pre = self.preprocessing
        if pre.task == "classification":
            return np.asarray(pre.classes)[np.argmax(outputs, axis=1)]
        return pre.values_of(outputs)

    def __repr__(self) -> str:
        pre = self.preprocessing
        what = f"{len(pre.classes)} classes" if pre.task == "classification" else "regression"
        return (f"TabularModel(target={pre.target!r}, {what}, {len(pre.features)} feature "
                f"columns -> {pre.n_inputs} inputs)")
