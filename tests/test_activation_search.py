"""keras_feedback.activations.search: activation search with keras-tuner."""

import keras
import numpy as np
import pytest

from keras_feedback import activations
from keras_feedback.activations import _search
from keras_feedback.layers import Feedback

SEED = 5


def _data(rng, n):
    x = rng.uniform(size=(n, 6, 2)).astype("float32")
    y = (x[:, :, 0] * x[:, :, 1]).sum(1, keepdims=True).astype("float32")
    return x, y


def _builder(log):
    def build_model(activation, feedback_activation="sigmoid"):
        log.append((activation, feedback_activation))
        model = keras.Sequential(
            [
                keras.Input((6, 2)),
                Feedback(
                    4,
                    feedback_units=2,
                    core="simple",
                    engine="reference",
                    activation=activation,
                    feedback_activation=feedback_activation,
                ),
                keras.layers.Dense(1),
            ]
        )
        model.compile(keras.optimizers.Adam(0.05), "mse")
        return model

    return build_model


def test_search_ranks_candidates_by_validation_loss(rng, tmp_path):
    train, validation = _data(rng, 64), _data(rng, 32)
    snake = activations.Snake(2.0)
    log = []
    table = activations.search(
        _builder(log),
        ["tanh", "pade", snake, "lisht"],
        train,
        validation,
        seed=SEED,
        directory=tmp_path,
        batch_size=16,
        shuffle=False,
    )
    assert [row["rank"] for row in table] == [1, 2, 3, 4]
    assert {row["activation"] for row in table} == {"tanh", "pade", "Snake", "lisht"}
    losses = [row["val_loss"] for row in table]
    assert losses == sorted(losses) and len(set(losses)) == 4
    assert table.best is table[0] and table.objective == "val_loss"
    # Each trial got a fresh copy of the instance, never the instance itself.
    copies = [a for a, _ in log if isinstance(a, activations.Snake)]
    assert len(copies) == 1 and copies[0] is not snake and not snake.built
    assert copies[0].initial_frequency == 2.0
    # The score is what training that model for the same budget gives.
    row = next(r for r in table if r["activation"] == "pade")
    keras.utils.set_random_seed(SEED)
    model = _builder([])("pade")
    model.fit(*train, batch_size=16, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_allclose(
        model.evaluate(*validation, verbose=0), row["val_loss"], rtol=1e-5
    )
    text = str(table)
    assert text.splitlines()[0].split() == ["rank", "|", "activation", "|", "val_loss"]
    assert all(name in text for name in ("tanh", "pade", "Snake", "lisht"))


def test_search_over_feedback_activations_with_max_trials(rng, tmp_path):
    train = _data(rng, 32)
    log = []
    table = activations.search(
        _builder(log),
        ["tanh", "relu"],
        train,
        max_trials=3,
        feedback_candidates=["sigmoid", "learnable_snake"],
        seed=SEED,
        directory=tmp_path,
        batch_size=16,
    )
    assert len(table) == 3 and table.objective == "loss"
    combos = {(r["activation"], r["feedback_activation"]) for r in table}
    assert len(combos) == 3
    assert combos <= {
        (a, f) for a in ("tanh", "relu") for f in ("sigmoid", "learnable_snake")
    }
    # Names reach the builder as names (`Feedback` makes a fresh instance).
    assert {f for _, f in log} <= {"sigmoid", "learnable_snake"}
    assert [r["loss"] for r in table] == sorted(r["loss"] for r in table)


def test_default_candidates_are_the_shipped_activations():
    assert set(_search.DEFAULT_CANDIDATES) == {
        "tanh",
        "relu",
        "lisht",
        "snake",
        "rrelu",
        "prelu",
        "learnable_swish",
        "learnable_snake",
        "pade",
        "apl",
    }
    for name in _search.DEFAULT_CANDIDATES:
        activations.get(name)


def test_search_bad_input(rng, tmp_path):
    train = _data(rng, 8)
    build = _builder([])
    with pytest.raises(ValueError, match="Did you mean: 'pade'"):
        activations.search(build, ["tanh", "padee"], train, directory=tmp_path)
    with pytest.raises(ValueError, match="`candidates` must not be empty"):
        activations.search(build, [], train, directory=tmp_path)
    with pytest.raises(TypeError, match="`candidates` must be a list"):
        activations.search(build, "tanh", train, directory=tmp_path)
    with pytest.raises(
        ValueError, match="`max_trials` must be a positive integer, got 0"
    ):
        activations.search(build, ["tanh"], train, max_trials=0, directory=tmp_path)
    with pytest.raises(TypeError, match="`build_model` must be callable"):
        activations.search(None, ["tanh"], train, directory=tmp_path)

    def uncompiled(activation):
        return keras.Sequential(
            [keras.Input((6, 2)), Feedback(2, activation=activation)]
        )

    with pytest.raises(ValueError, match="must return a compiled keras.Model"):
        activations.search(uncompiled, ["tanh"], train, directory=tmp_path)
