"""Staged training: the feedforward part, the feedback part, then everything.

Every feedback layer of the library (``Feedback``, ``FeedbackCell``,
``ConvFeedback2D``, ``FeedbackLoop``) reports its ``feedback_weights`` and
``feedforward_weights``. ``staged_fit`` trains a model in stages, each a
normal ``fit`` in which only one part's weights are trainable (the others are
frozen variable by variable, so they stay bit-for-bit unchanged), with its own
epochs and optimizer settings.
"""

import dataclasses
from typing import Any
from typing import Dict
from typing import List
from typing import Mapping
from typing import Optional
from typing import Sequence
from typing import Union

import keras

from keras_feedback._api import public
from keras_feedback.layers._feedback_loop import FeedbackLoop
from keras_feedback.layers._feedback_loop import nested_layers

PARTS = ("feedforward", "feedback", "all")


@public("keras_feedback.training.weight_groups", serializable=False)
def weight_groups(model: keras.layers.Layer) -> Dict[str, List[keras.Variable]]:
    """The model's trainable weights split into feedforward and feedback.

    The feedback part is the union of the ``feedback_weights`` of every
    feedback layer found in ``model`` (nested models, Keras wrappers and
    ``FeedbackLoop`` blocks included); the feedforward part is every other
    trainable weight of the model (the feedforward weights of the feedback
    layers and all other layers, e.g. a classifier head).

    Args:
        model: a Keras layer or model.

    Returns:
        ``{"feedforward": [variables], "feedback": [variables]}``, both in
        the order of ``model.trainable_weights``.
    """
    feedback = set()
    for layer in nested_layers(model):
        feedback.update(id(v) for v in getattr(layer, "feedback_weights", ()))
    trainable = model.trainable_weights
    return {
        "feedforward": [v for v in trainable if id(v) not in feedback],
        "feedback": [v for v in trainable if id(v) in feedback],
    }


@public("keras_feedback.training.Stage", serializable=False)
@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of ``staged_fit``.

    Args:
        train: which weights train: ``"feedforward"``, ``"feedback"`` or
            ``"all"``; the others are frozen for the stage.
        epochs: positive int, epochs of the stage's ``fit``.
        learning_rate: optional float, the learning rate of the stage's
            optimizer.
        optimizer: optional optimizer (name, config or instance) for the
            stage; default a fresh copy of the optimizer the model was
            compiled with.
        loop: bool, whether ``FeedbackLoop`` layers feed back during the
            stage (False: every iteration is the feedforward pass).
        name: optional name, shown in errors.
    """

    train: str = "all"
    epochs: int = 1
    learning_rate: Optional[float] = None
    optimizer: Any = None
    loop: bool = True
    name: Optional[str] = None

    def __post_init__(self):
        label = self.name or "stage"
        if self.train not in PARTS:
            raise ValueError(
                f"{label}: argument `train` must be one of {PARTS}, got {self.train!r}"
            )
        if (
            isinstance(self.epochs, bool)
            or not isinstance(self.epochs, int)
            or self.epochs < 1
        ):
            raise ValueError(
                f"{label}: argument `epochs` must be a positive integer, got "
                f"{self.epochs!r}"
            )
        if self.learning_rate is not None and (
            isinstance(self.learning_rate, bool)
            or not isinstance(self.learning_rate, (int, float))
            or self.learning_rate <= 0
        ):
            raise ValueError(
                f"{label}: argument `learning_rate` must be a positive number or "
                f"None, got {self.learning_rate!r}"
            )


def _stage(value, index):
    if isinstance(value, Stage):
        return value
    if isinstance(value, dict):
        unknown = sorted(set(value) - {f.name for f in dataclasses.fields(Stage)})
        if unknown:
            raise ValueError(
                f"Argument `stages`[{index}] has unknown keys {unknown}; expected "
                f"keys of keras_feedback.training.Stage"
            )
        return Stage(**{"name": f"stage {index}", **value})
    raise TypeError(
        f"Argument `stages`[{index}] must be a Stage or a dict, got {value!r}"
    )


def _optimizer(stage, base_config):
    if stage.optimizer is not None:
        optimizer = keras.optimizers.get(stage.optimizer)
        config = keras.optimizers.serialize(optimizer)
    else:
        config = base_config
    config = dict(config, config=dict(config["config"]))
    if stage.learning_rate is not None:
        config["config"]["learning_rate"] = float(stage.learning_rate)
    # Deserialized from its config: a fresh optimizer with no slots, built
    # by ``fit`` for the stage's trainable variables only.
    return keras.optimizers.deserialize(config)


@public("keras_feedback.training.staged_fit", serializable=False)
def staged_fit(
    model: keras.Model,
    stages: Sequence[Union[Stage, Mapping[str, Any]]],
    x: Any = None,
    y: Any = None,
    **fit_kwargs: Any,
) -> List[keras.callbacks.History]:
    """Trains ``model`` stage by stage, each stage a normal ``fit``.

    The model must be compiled: every stage recompiles it with the same
    loss, metrics and options and a fresh optimizer (the compiled one's
    class and settings, or the stage's ``optimizer``, with the stage's
    ``learning_rate``). During a stage only the weights of its part train
    (see ``weight_groups``); the others are frozen by setting their
    variables' ``trainable`` to False, so the optimizer never touches them.
    Non-trainable state (e.g. ``BatchNormalization`` statistics) updates as
    usual. Afterwards every variable's ``trainable`` flag and every
    ``FeedbackLoop``'s ``feedback_enabled`` are restored; the model stays
    compiled as in the last stage (compile again before training it
    further).

    Args:
        model: a compiled ``keras.Model``.
        stages: a list of ``keras_feedback.training.Stage`` or of dicts of
            its fields, e.g. ``[{"train": "feedforward", "epochs": 3,
            "loop": False}, {"train": "feedback", "epochs": 2,
            "learning_rate": 1e-3}, {"train": "all", "epochs": 2}]``.
        x, y: the training data, as for ``fit``.
        **fit_kwargs: other ``fit`` arguments shared by all stages
            (``batch_size``, ``validation_data``, ``callbacks``, ``verbose``,
            ...); not ``epochs``, which each stage sets.

    Returns:
        The list of the stages' ``History`` objects.

    Example:

    >>> import numpy as np, keras
    >>> import keras_feedback
    >>> inputs = keras.Input((5, 2))
    >>> h = keras_feedback.layers.Feedback(4, feedback_units=2)(inputs)
    >>> model = keras.Model(inputs, keras.layers.Dense(1)(h))
    >>> model.compile("adam", "mse")
    >>> histories = keras_feedback.training.staged_fit(
    ...     model, [{"train": "feedforward"}, {"train": "feedback"}],
    ...     np.ones((8, 5, 2)), np.ones((8, 1)), verbose=0)
    >>> len(histories)
    2
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Argument `model` must be a keras.Model, got {type(model).__name__}"
        )
    if not getattr(model, "compiled", False):
        raise ValueError(
            f"Argument `model` must be compiled (its loss and metrics are kept "
            f"for every stage), got the uncompiled model {model.name!r}"
        )
    if "epochs" in fit_kwargs:
        raise ValueError(
            "Argument `epochs` is set per stage (Stage.epochs), got "
            f"epochs={fit_kwargs['epochs']!r}"
        )
    if isinstance(stages, (Stage, dict)) or not stages:
        raise ValueError(
            f"Argument `stages` must be a non-empty list of stages, got {stages!r}"
        )
    stages = [_stage(s, i) for i, s in enumerate(stages)]
    compile_config = model.get_compile_config()
    base_optimizer = keras.optimizers.serialize(model.optimizer)
    loops = [layer for layer in nested_layers(model) if isinstance(layer, FeedbackLoop)]
    variables = list(model.weights)
    saved_trainable = [v.trainable for v in variables]
    saved_loops = [loop.feedback_enabled for loop in loops]
    histories = []
    try:
        for stage in stages:
            groups = weight_groups(model)
            if stage.train == "all":
                trained = groups["feedforward"] + groups["feedback"]
            else:
                trained = groups[stage.train]
            if not trained:
                raise ValueError(
                    f"{stage.name or 'stage'} trains the {stage.train!r} weights, "
                    f"but model {model.name!r} has no trainable {stage.train} "
                    "weights"
                )
            frozen = [
                v
                for part, group in groups.items()
                if stage.train not in ("all", part)
                for v in group
            ]
            for variable in frozen:
                variable.trainable = False
            for loop in loops:
                loop.feedback_enabled = stage.loop
            config = dict(compile_config)
            config["optimizer"] = keras.optimizers.serialize(
                _optimizer(stage, base_optimizer)
            )
            model.compile_from_config(config)
            histories.append(model.fit(x, y, epochs=stage.epochs, **fit_kwargs))
            for variable in frozen:
                variable.trainable = True
    finally:
        for variable, trainable in zip(variables, saved_trainable):
            variable.trainable = trainable
        for loop, enabled in zip(loops, saved_loops):
            loop.feedback_enabled = enabled
    return histories
