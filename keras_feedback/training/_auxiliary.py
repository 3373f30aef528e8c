"""Auxiliary losses over iterations and time steps, for ``compile``/``fit``.

A ``FeedbackLoop(..., return_iterations=True)`` outputs every iteration's
prediction ``(batch, iterations, ...)``; a ``Feedback(..., return_trace=True)``
layer outputs the per-step trace ``(batch, time, ...)`` (``h``, ``c``,
``alpha``). ``IterationLoss`` turns such an output into one Keras loss,

    L = main_weight · L(y, ŷ_K) + λ · Σ_k w_k · L(y, ŷ_k),

and ``IterationMetric`` reports a metric at one iteration. Both go straight
into ``model.compile``; several outputs (a prediction and a trace) combine
with ``compile(loss={...}, loss_weights={...})``: no custom train step.
"""

from typing import Any
from typing import Callable
from typing import Optional
from typing import Sequence
from typing import Union

import keras
import tensorflow as tf

from keras_feedback._api import public
from keras_feedback._checks import check_bool


def _check_weight(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(
            f"Argument `{name}` must be a non-negative number, got {value!r}"
        )
    return float(value)


def _base_loss(loss):
    if isinstance(loss, keras.losses.Loss):
        return loss
    try:
        function = keras.losses.get(loss)
    except (ValueError, TypeError):
        function = None
    if function is None or not callable(function):
        raise ValueError(
            "Argument `loss` must be a Keras loss (a name, a function or a "
            f"keras.losses.Loss), got {loss!r}"
        )
    return function


def _unreduced(loss, y_true, y_pred):
    """The per-sample values of ``loss``, before any reduction."""
    if isinstance(loss, keras.losses.Loss):
        return loss.call(y_true, y_pred)
    return loss(y_true, y_pred)


@public("keras_feedback.training.IterationLoss")
class IterationLoss(keras.losses.Loss):
    """A loss over every iteration (or time step) of a stacked prediction.

    For predictions ``ŷ`` of shape ``(batch, K, ...)`` (axis 1: the
    iterations of a ``FeedbackLoop`` with ``return_iterations=True``, or
    the steps of a ``Feedback`` trace), computes per sample

        L = main_weight · L(y, ŷ_K) + aux_weight · Σ_k w_k · L(y, ŷ_k)

    with ``L`` the base ``loss`` (its own reduction is not used: this loss
    reduces, and takes ``sample_weight``, like any Keras loss). The main term
    is the last iteration; the auxiliary sum runs over all ``K``.

    Args:
        loss: the base loss: a name (``"mse"``), a loss function, or a
            ``keras.losses.Loss`` (e.g. ``SparseCategoricalCrossentropy(
            from_logits=True)``).
        weights: the ``w_k``: None for ``1/K`` each, or a sequence of ``K``
            non-negative numbers (``K`` is read from the prediction; a
            length that differs is an error).
        aux_weight: ``λ``, a non-negative number.
        main_weight: non-negative number, weight of the last iteration's
            loss (``0`` leaves only the weighted sum).
        shared_target: bool. True: ``y_true`` has no iteration axis and is
            every iteration's target (a class label for every iteration of
            a classifier). False: ``y_true`` is ``(batch, K, ...)``, its own
            target for each iteration or step (supervising a trace).
        reduction, name, dtype: as in ``keras.losses.Loss``.

    Example:

    >>> import numpy as np
    >>> import keras_feedback
    >>> loss = keras_feedback.training.IterationLoss(
    ...     "mse", weights=[0.2, 0.3, 0.5], aux_weight=0.5)
    >>> y_pred = np.ones((2, 3, 1), "float32")   # (batch, iterations, 1)
    >>> float(loss(np.zeros((2, 1), "float32"), y_pred))
    1.5

    In ``compile``, with one output (a classifier over 3 iterations):

    ``model.compile("adam", loss=IterationLoss(
    keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
    metrics=[IterationMetric("sparse_categorical_accuracy", k) for k in
    range(3)])``

    and with a trace output next to the prediction (a ``Feedback`` layer's
    ``c`` returned as the model output ``"c"``), ``λ`` as a loss weight:

    ``model.compile("adam", loss={"y": "mse", "c": IterationLoss("mse",
    main_weight=0.0, shared_target=False)}, loss_weights={"y": 1.0, "c":
    0.1})``
    """

    def __init__(
        self,
        loss: Union[str, Callable, keras.losses.Loss],
        weights: Optional[Sequence[float]] = None,
        aux_weight: float = 1.0,
        main_weight: float = 1.0,
        shared_target: bool = True,
        reduction: Optional[str] = "sum_over_batch_size",
        name: str = "iteration_loss",
        dtype: Any = None,
    ) -> None:
        base = _base_loss(loss)
        if weights is not None:
            weights = [_check_weight(f"weights[{i}]", w) for i, w in enumerate(weights)]
            if not weights:
                raise ValueError("Argument `weights` must not be empty, got []")
        aux_weight = _check_weight("aux_weight", aux_weight)
        main_weight = _check_weight("main_weight", main_weight)
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.loss = base
        self.weights = weights
        self.aux_weight = aux_weight
        self.main_weight = main_weight
        self.shared_target = check_bool("shared_target", shared_target)

    def _iteration_weights(self, iterations, dtype):
        if self.weights is None:
            return tf.fill([iterations], 1.0 / tf.cast(iterations, dtype))
        weights = tf.constant(self.weights, dtype)
        static = tf.get_static_value(iterations)
        if static is not None and static != len(self.weights):
            raise ValueError(
                f"Argument `weights` has {len(self.weights)} entries, but the "
                f"prediction has {static} iterations on axis 1"
            )
        return weights

    def call(self, y_true, y_pred):
        y_pred = tf.convert_to_tensor(y_pred)
        y_true = tf.convert_to_tensor(y_true)
        if y_pred.shape.rank is not None and y_pred.shape.rank < 2:
            raise ValueError(
                "IterationLoss expects predictions (batch, iterations, ...), "
                f"got shape {tuple(y_pred.shape)}"
            )
        shape = tf.shape(y_pred)
        batch, iterations = shape[0], shape[1]
        if y_pred.shape[1] is not None:
            iterations = y_pred.shape[1]
        # Iterations folded into the batch: one call of the base loss.
        flat_pred = tf.reshape(y_pred, tf.concat([[-1], shape[2:]], 0))
        if self.shared_target:
            flat_true = tf.repeat(y_true, iterations, axis=0)
        else:
            flat_true = tf.reshape(y_true, tf.concat([[-1], tf.shape(y_true)[2:]], 0))
        values = tf.convert_to_tensor(_unreduced(self.loss, flat_true, flat_pred))
        values = tf.reshape(
            values, tf.concat([[batch, iterations], tf.shape(values)[1:]], 0)
        )
        weights = self._iteration_weights(iterations, values.dtype)
        weights = tf.reshape(weights, [-1] + [1] * (values.shape.rank - 2))
        total = self.aux_weight * tf.reduce_sum(weights * values, axis=1)
        if self.main_weight:
            total = total + self.main_weight * values[:, -1]
        return total

    def get_config(self):
        return {
            **super().get_config(),
            "loss": keras.saving.serialize_keras_object(self.loss),
            "weights": self.weights,
            "aux_weight": self.aux_weight,
            "main_weight": self.main_weight,
            "shared_target": self.shared_target,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["loss"] = keras.saving.deserialize_keras_object(config["loss"])
        return cls(**config)


@public("keras_feedback.training.IterationMetric")
class IterationMetric(keras.metrics.Metric):
    """A metric of one iteration (or time step) of a stacked prediction.

    Slices ``y_pred[:, iteration]`` (and ``y_true[:, iteration]`` when
    ``shared_target=False``) and updates ``metric`` with it, so that ``fit``
    reports, e.g., the accuracy at every iteration of a ``FeedbackLoop``.

    Args:
        metric: a Keras metric: a name (``"sparse_categorical_accuracy"``),
            a function or a ``keras.metrics.Metric``.
        iteration: int index on axis 1 (``-1``: the last).
        shared_target: bool, as in ``IterationLoss``.
        name: default ``"<metric>_<iteration>"`` (``iteration`` counted from
            1; ``"last"`` for ``-1``).
        dtype: as in ``keras.metrics.Metric``.

    Example:

    >>> import numpy as np
    >>> import keras_feedback
    >>> metric = keras_feedback.training.IterationMetric(
    ...     "sparse_categorical_accuracy", iteration=0)
    >>> metric.name
    'sparse_categorical_accuracy_1'
    """

    def __init__(
        self,
        metric: Union[str, Callable, keras.metrics.Metric],
        iteration: int = -1,
        shared_target: bool = True,
        name: Optional[str] = None,
        dtype: Any = None,
    ) -> None:
        if isinstance(iteration, bool) or not isinstance(iteration, int):
            raise ValueError(
                f"Argument `iteration` must be an integer, got {iteration!r}"
            )
        inner = keras.metrics.get(metric)
        if not isinstance(inner, keras.metrics.Metric):
            if not callable(inner):
                raise ValueError(
                    f"Argument `metric` must be a Keras metric, got {metric!r}"
                )
            inner = keras.metrics.MeanMetricWrapper(
                inner, name=getattr(inner, "__name__", None)
            )
        suffix = (
            "last"
            if iteration == -1
            else str(iteration + 1 if iteration >= 0 else iteration)
        )
        super().__init__(name=name or f"{inner.name}_{suffix}", dtype=dtype)
        self.metric = inner
        self.iteration = iteration
        self.shared_target = check_bool("shared_target", shared_target)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = tf.convert_to_tensor(y_pred)
        if not self.shared_target:
            y_true = tf.convert_to_tensor(y_true)[:, self.iteration]
        return self.metric.update_state(
            y_true, y_pred[:, self.iteration], sample_weight=sample_weight
        )

    def result(self):
        return self.metric.result()

    def reset_state(self):
        self.metric.reset_state()

    def get_config(self):
        return {
            "metric": keras.saving.serialize_keras_object(self.metric),
            "iteration": self.iteration,
            "shared_target": self.shared_target,
            "name": self.name,
            "dtype": self.dtype,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["metric"] = keras.saving.deserialize_keras_object(config["metric"])
        return cls(**config)
