"""Activation search with keras-tuner: which activation suits a model?

``search`` builds the model once per candidate (and per feedback candidate,
when those are searched too), trains each for the same budget from the same
seed, and ranks them by the validation objective. keras-tuner is imported
only when ``search`` runs.
"""

import math
import numbers
import os
import tempfile
from typing import Any
from typing import Callable
from typing import Optional
from typing import Sequence
from typing import Union

import keras

from keras_feedback._api import public
from keras_feedback.activations import _learnable
from keras_feedback.activations import _registry

# The core candidates tried by default: the cell's default activation as the
# baseline, the fixed extras and the learnable activations.
DEFAULT_CANDIDATES = (
    ("tanh", "relu") + _learnable.EXTRA_NAMES + _learnable.LEARNABLE_NAMES
)


class _Candidate:
    """One candidate: a label for the table and a fresh activation per build."""

    def __init__(self, identifier, argument):
        if isinstance(identifier, str):
            _registry.get(identifier)  # Unknown names list close ones.
            self.label, self._make = identifier, lambda: identifier
            return
        if identifier is None or not callable(identifier):
            raise TypeError(
                f"Argument `{argument}` must hold activation names (str) or "
                f"callables, got {identifier!r} (of type "
                f"{type(identifier).__name__})"
            )
        if isinstance(identifier, keras.layers.Layer):
            # Every trial gets its own copy: no weights shared between trials.
            config = keras.saving.serialize_keras_object(identifier)
            config.pop("build_config", None)
            self.label = type(identifier).__name__
            self._make = lambda: keras.saving.deserialize_keras_object(config)
        else:
            self.label = getattr(identifier, "__name__", type(identifier).__name__)
            self._make = lambda: identifier

    def make(self):
        return self._make()


def _candidates(values, argument):
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(
            f"Argument `{argument}` must be a list of activations, got {values!r}"
        )
    result, seen = [], {}
    for value in values:
        candidate = _Candidate(value, argument)
        count = seen.get(candidate.label, 0)
        seen[candidate.label] = count + 1
        if count:
            candidate.label = f"{candidate.label}_{count + 1}"
        result.append(candidate)
    if not result:
        raise ValueError(f"Argument `{argument}` must not be empty, got {values!r}")
    return result


class RankedTable(list):
    """The ranked result of `search`: a list of row dicts, best first.

    Each row holds ``rank``, ``activation``, ``feedback_activation`` (when
    searched), the objective's name with its value (None for a failed
    trial) and ``trial_id``. ``str(table)`` is a text table; ``best`` is the
    first row; ``objective`` the name of the ranking column; ``tuner`` the
    keras-tuner tuner (its oracle holds every trial).
    """

    def __init__(self, rows, objective, tuner):
        super().__init__(rows)
        self.objective = objective
        self.tuner = tuner

    @property
    def best(self):
        return self[0]

    def __str__(self):
        columns = [
            c for c in ("rank", "activation", "feedback_activation") if c in self[0]
        ]
        columns.append(self.objective)
        cells = [
            [
                "failed"
                if row[c] is None
                else f"{row[c]:.5g}"
                if isinstance(row[c], float)
                else str(row[c])
                for c in columns
            ]
            for row in self
        ]
        widths = [
            max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)
        ]
        lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths))]
        lines.append("-+-".join("-" * w for w in widths))
        lines += [" | ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
        return "\n".join(lines)


def _split(data, argument):
    if isinstance(data, tuple) and len(data) in (2, 3):
        return data[0], data[1], data[2:]
    if isinstance(data, tuple):
        raise ValueError(
            f"Argument `{argument}` must be (x, y), (x, y, sample_weight) or a "
            f"dataset yielding them, got a tuple of {len(data)} items"
        )
    return data, None, ()


def _sort_key(score, direction):
    if score is None or not math.isfinite(score):
        return (1, 0.0)
    return (0, score if direction == "min" else -score)


@public("keras_feedback.activations.search")
def search(
    build_model: Callable[..., keras.Model],
    candidates: Optional[Sequence[_registry.ActivationLike]] = None,
    train_data: Any = None,
    validation_data: Any = None,
    max_trials: Optional[int] = None,
    *,
    feedback_candidates: Optional[Sequence[_registry.ActivationLike]] = None,
    epochs: int = 1,
    objective: Any = None,
    seed: int = 0,
    directory: Union[str, os.PathLike, None] = None,
    project_name: str = "activation_search",
    verbose: int = 0,
    **fit_kwargs: Any,
) -> RankedTable:
    """Tries activations for a model and ranks them, with keras-tuner.

    Every trial builds the model with one candidate, after
    ``keras.utils.set_random_seed(seed)`` so that all trials start from the
    same weights, trains it for ``epochs`` and scores it by ``objective``.
    The grid (candidates x feedback candidates) is walked in order
    (``keras_tuner.GridSearch``); with ``max_trials`` smaller than the grid,
    only the first ``max_trials`` combinations run.

    Args:
        build_model: a function ``build_model(activation)`` (or
            ``build_model(activation, feedback_activation)`` when
            ``feedback_candidates`` is given) returning a compiled Keras
            model. It receives an activation name or a fresh activation
            instance, as ``keras_feedback.layers.Feedback`` accepts them.
        candidates: activations to try: names and/or activation instances
            (learnable ones are copied for every trial). Defaults to
            ``DEFAULT_CANDIDATES``: tanh, relu, lisht, snake, rrelu, prelu,
            learnable_swish, learnable_snake, pade, apl.
        train_data: ``(x, y)`` arrays or a `tf.data.Dataset`.
        validation_data: ``(x, y)`` arrays or a dataset; None scores the
            training loss.
        max_trials: optional positive int, the most trials to run.
        feedback_candidates: optional list of feedback activations to try
            with every candidate.
        epochs: positive int, epochs per trial.
        objective: the metric to rank by, e.g. ``"val_loss"`` (default with
            validation data, else ``"loss"``), or a `keras_tuner.Objective`.
        seed: int, the weight seed of every trial and the tuner's seed.
        directory: where keras-tuner writes its trials (default: a new
            temporary directory).
        project_name: keras-tuner project name (a subdirectory).
        verbose: keras-tuner/fit verbosity; > 0 also prints the table.
        **fit_kwargs: more arguments of ``model.fit`` (``batch_size``,
            ``callbacks``, ``steps_per_epoch``, ...).

    Returns:
        A `RankedTable`: a list of row dicts, best first (failed or
        non-finite trials last).

    Raises:
        ValueError: an unknown activation name (the message lists close
            names), an empty candidate list, a bad ``max_trials`` or
            ``epochs``, or a ``build_model`` that returns an uncompiled
            model.
        TypeError: ``build_model`` is not callable or a candidate is
            neither a name nor a callable.

    Example:

    ```python
    def build(activation):
        model = keras.Sequential([
            keras.Input((None, 2)),
            keras_feedback.layers.Feedback(16, activation=activation),
            keras.layers.Dense(1),
        ])
        model.compile("adam", "mse")
        return model

    table = keras_feedback.activations.search(
        build, ["tanh", "pade", "learnable_snake"], (x, y), (x_val, y_val))
    print(table)
    ```
    """
    import keras_tuner

    if not callable(build_model):
        raise TypeError(f"Argument `build_model` must be callable, got {build_model!r}")
    if train_data is None:
        raise ValueError("Argument `train_data` is required, got None")
    if candidates is None:
        candidates = DEFAULT_CANDIDATES
    cores = _candidates(candidates, "candidates")
    feedbacks = None
    if feedback_candidates is not None:
        feedbacks = _candidates(feedback_candidates, "feedback_candidates")
    for name, value in (("epochs", epochs), ("max_trials", max_trials)):
        if value is None and name == "max_trials":
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Integral)
            or value < 1
        ):
            raise ValueError(
                f"Argument `{name}` must be a positive integer, got {value!r}"
            )
    grid = len(cores) * (len(feedbacks) if feedbacks else 1)
    max_trials = grid if max_trials is None else min(int(max_trials), grid)
    if objective is None:
        objective = "val_loss" if validation_data is not None else "loss"
    by_label = {c.label: c for c in cores}
    by_feedback_label = {c.label: c for c in feedbacks or ()}

    class HyperModel(keras_tuner.HyperModel):
        def build(self, hp):
            label = hp.Choice("activation", [c.label for c in cores])
            kwargs = {}
            if feedbacks:
                kwargs["feedback_activation"] = by_feedback_label[
                    hp.Choice("feedback_activation", [c.label for c in feedbacks])
                ].make()
            keras.utils.set_random_seed(seed)
            model = build_model(by_label[label].make(), **kwargs)
            if not isinstance(model, keras.Model) or not getattr(
                model, "compiled", False
            ):
                raise ValueError(
                    "Argument `build_model` must return a compiled keras.Model, "
                    f"got {model!r}"
                )
            return model

    class Tuner(keras_tuner.GridSearch):
        # keras-tuner's documented customisation point. Its default trial
        # also checkpoints models and imports `tensorboard`, which the
        # search needs neither of.
        def run_trial(self, trial, *args, **kwargs):
            model = self.hypermodel.build(trial.hyperparameters)
            return model.fit(*args, **kwargs)

    if directory is None:
        directory = tempfile.mkdtemp(prefix="keras_feedback_search_")
    tuner = Tuner(
        HyperModel(),
        objective=objective,
        max_trials=max_trials,
        seed=seed,
        directory=directory,
        project_name=project_name,
        overwrite=True,
        max_consecutive_failed_trials=max_trials,
    )
    x, y, rest = _split(train_data, "train_data")
    if rest:
        fit_kwargs.setdefault("sample_weight", rest[0])
    tuner.search(
        x,
        y,
        validation_data=validation_data,
        epochs=int(epochs),
        verbose=verbose,
        **fit_kwargs,
    )
    oracle_objective = tuner.oracle.objective
    name = oracle_objective.name
    direction = oracle_objective.direction
    rows = []
    for trial in tuner.oracle.trials.values():
        values = trial.hyperparameters.values
        row = {"activation": values["activation"]}
        if feedbacks:
            row["feedback_activation"] = values["feedback_activation"]
        score = trial.score
        row[name] = None if score is None else float(score)
        row["trial_id"] = trial.trial_id
        rows.append(row)
    rows.sort(key=lambda row: _sort_key(row[name], direction))
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    rows = [{"rank": r.pop("rank"), **r} for r in rows]
    table = RankedTable(rows, name, tuner)
    if verbose:
        print(table)
    return table
