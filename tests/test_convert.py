"""Drop-in from Keras: ``Feedback.from_keras`` and ``layers.convert`` give the
Keras layers' outputs, masks and directions included."""

import keras
import numpy as np
import pytest
from helpers import randomise

from keras_feedback.layers import Feedback
from keras_feedback.layers import convert
from keras_feedback.layers._feedback_loop import nested_layers

KERAS = {
    "simple": keras.layers.SimpleRNN,
    "gru": keras.layers.GRU,
    "lstm": keras.layers.LSTM,
}


def _data(rng, batch=3, time=6, features=3):
    x = rng.normal(size=(batch, time, features)).astype("float32")
    mask = np.ones((batch, time), bool)
    mask[0, 4:] = False  # padded at the end
    mask[1, :2] = False  # and at the start
    return x, mask


def _close(ours, theirs):
    for a, b in zip(keras.tree.flatten(ours), keras.tree.flatten(theirs)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


@pytest.mark.parametrize("core", KERAS)
@pytest.mark.parametrize("go_backwards", [False, True])
def test_from_keras_equals_the_keras_layer(rng, core, go_backwards):
    x, mask = _data(rng)
    theirs = KERAS[core](
        4, return_sequences=True, return_state=True, go_backwards=go_backwards
    )
    theirs(x)
    randomise(theirs, rng)
    ours = Feedback.from_keras(theirs)
    assert (ours.core, ours.feedback_units, ours.name) == (core, 0, theirs.name)
    assert ours.go_backwards == go_backwards and ours.return_state
    _close(ours(x), theirs(x))
    _close(ours(x, mask=mask), theirs(x, mask=mask))


@pytest.mark.parametrize("core,merge_mode", [("lstm", "concat"), ("gru", "sum")])
def test_from_keras_bidirectional(rng, core, merge_mode):
    x, mask = _data(rng)
    theirs = keras.layers.Bidirectional(
        KERAS[core](4, return_sequences=True), merge_mode=merge_mode
    )
    theirs(x)
    randomise(theirs, rng)
    ours = Feedback.from_keras(theirs)
    assert isinstance(ours, keras.layers.Bidirectional)
    assert isinstance(ours.forward_layer, Feedback)
    assert isinstance(ours.backward_layer, Feedback)
    assert ours.backward_layer.go_backwards
    _close(ours(x, mask=mask), theirs(x, mask=mask))


def _keras_model():
    inner = keras.Sequential(
        [
            keras.Input((None, 3)),
            keras.layers.Masking(),
            keras.layers.LSTM(3, return_sequences=True),
        ],
        name="inner",
    )
    inputs = keras.Input((None, 3))
    hidden = inner(inputs)  # its mask goes on to the next layers
    hidden = keras.layers.Bidirectional(keras.layers.GRU(4, return_sequences=True))(
        hidden
    )
    hidden = keras.layers.SimpleRNN(2, go_backwards=True)(hidden)
    return keras.Model(inputs, keras.layers.Dense(1)(hidden))


def test_convert_a_model_with_nested_and_wrapped_layers(rng):
    model = _keras_model()
    randomise(model, rng)
    x, _ = _data(rng)
    x[0, 4:] = 0.0  # masked by Masking
    converted = convert(model)
    kinds = [type(layer).__name__ for layer in nested_layers(converted)]
    assert kinds.count("Feedback") == 4  # LSTM, GRU forward and backward, SimpleRNN
    assert not {"SimpleRNN", "GRU", "LSTM"} & set(kinds)
    assert "Masking" in kinds
    _close(converted(x), model(x))
    assert type(model.layers[-2]) is keras.layers.SimpleRNN  # the original


def test_a_converted_model_trains_and_saves(rng, tmp_path):
    model = keras.Sequential(
        [keras.Input((None, 3)), keras.layers.GRU(3), keras.layers.Dense(1)]
    )
    x, _ = _data(rng)
    converted = convert(model)
    converted.compile("adam", "mse")
    converted.fit(x, np.ones((3, 1)), epochs=2, verbose=0)
    # The copy has weights of its own: training it leaves the original as it was.
    assert not np.allclose(np.asarray(converted(x)), np.asarray(model(x)))
    path = tmp_path / "converted.keras"
    converted.save(path)
    _close(keras.saving.load_model(path)(x), converted(x))


def test_keras_configs_build_feedback_layers(rng):
    x, _ = _data(rng)
    for core, cls in KERAS.items():
        theirs = cls(4)
        theirs(x)
        config = {**theirs.get_config(), "core": core, "feedback_units": 0}
        if core != "simple":
            config.update(use_cudnn="auto", implementation=1)
        ours = Feedback.from_config(config)
        ours(x)
        ours.set_weights(theirs.get_weights())
        _close(ours(x), theirs(x))


@pytest.mark.parametrize(
    "arguments,match",
    [
        ({"use_cudnn": "yes"}, "Argument `use_cudnn` must be 'auto', True or False"),
        ({"time_major": True}, "Argument `time_major`.*time_major=True"),
    ],
)
def test_keras_only_arguments_refused_with_the_reason(arguments, match):
    with pytest.raises(ValueError, match=match):
        Feedback(4, feedback_units=0, core="gru", **arguments)


def test_keras_compatibility_arguments_as_keras_takes_them(rng):
    x, _ = _data(rng)
    # A legacy `implementation` of any value is accepted and ignored.
    for implementation in (0, 1, 2, 3):
        layer = Feedback(4, feedback_units=0, core="gru", implementation=implementation)
        assert layer(x).shape == (x.shape[0], 4)
        assert "implementation" not in layer.get_config()
    # use_cudnn is kept with Keras's values (Bidirectional copies it) ...
    for value in ("auto", False, True):
        assert Feedback(4, use_cudnn=value).use_cudnn == value
    wrapped = keras.layers.Bidirectional(Feedback(4, use_cudnn=False))
    assert wrapped.forward_layer.use_cudnn is False
    # ... and True fails when called, with Keras's advice (no cuDNN here).
    with pytest.raises(ValueError, match="Pass use_cudnn='auto' to fallback"):
        Feedback(4, use_cudnn=True)(x)


def test_bad_inputs_and_keras_weight_files(tmp_path):
    with pytest.raises(
        TypeError, match="Argument `layer` must be a keras.layers.Simple"
    ):
        Feedback.from_keras(keras.layers.Dense(3))
    with pytest.raises(TypeError, match="Argument `model` must be a keras.Model"):
        convert(keras.layers.GRU(3))

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="convert its layers with Feedback.from_keras"):
        convert(Subclassed())
    # A Keras model's weights file names its layers by class: the error says
    # how to get the weights over instead.
    theirs = keras.Sequential([keras.Input((None, 3)), keras.layers.GRU(4)])
    theirs.save_weights(tmp_path / "gru.weights.h5")
    ours = keras.Sequential([keras.Input((None, 3)), Feedback(4, feedback_units=0)])
    with pytest.raises(ValueError, match="keras_feedback.layers.convert"):
        ours.load_weights(tmp_path / "gru.weights.h5")
