"""Tests for keras_feedback.activations: lookup, serialization, derivatives."""

import functools
import inspect
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_feedback import activations
from keras_feedback.activations import _derivatives
from keras_feedback.activations import _registry

NON_ELEMENTWISE = ("glu", "log_softmax", "softmax", "sparsemax")

# Options for the activations that cannot be called on `x` alone.
REQUIRED_OPTIONS = {"threshold": {"threshold": 0.5, "default_value": -2.0}}

# Points where an activation (with its default options) is not
# differentiable, or where autodiff picks one side arbitrarily.
KINKS = {
    "celu": [0.0],
    "elu": [0.0],
    "hard_shrink": [-0.5, 0.5],
    "hard_sigmoid": [-3.0, 3.0],
    "hard_silu": [-3.0, 3.0],
    "hard_swish": [-3.0, 3.0],
    "hard_tanh": [-1.0, 1.0],
    "leaky_relu": [0.0],
    "relu": [0.0],
    "relu6": [0.0, 6.0],
    "selu": [0.0],
    "soft_shrink": [-0.5, 0.5],
    "sparse_plus": [-1.0, 1.0],
    "sparse_sigmoid": [-1.0, 1.0],
    "threshold": [0.5],
}

# (name, options, kinks): derivatives with options other than the defaults.
OPTION_VARIANTS = [
    ("celu", {"alpha": 0.5}, [0.0]),
    ("elu", {"alpha": 0.5}, [0.0]),
    ("gelu", {"approximate": True}, []),
    ("hard_shrink", {"threshold": 1.5}, [-1.5, 1.5]),
    ("leaky_relu", {"negative_slope": 0.05}, [0.0]),
    ("relu", {"negative_slope": 0.1}, [0.0]),
    ("relu", {"max_value": 4.0}, [0.0, 4.0]),
    ("relu", {"max_value": 6.0}, [0.0, 6.0]),
    ("relu", {"threshold": 1.0}, [1.0]),
    ("relu", {"threshold": -1.0}, [-1.0]),
    ("relu", {"threshold": -1.0, "max_value": 3.0}, [-1.0, 0.0, 3.0]),
    (
        "relu",
        {"negative_slope": 0.3, "max_value": 5.0, "threshold": 2.0},
        [2.0, 5.0],
    ),
    ("soft_shrink", {"threshold": 2.0}, [-2.0, 2.0]),
    ("squareplus", {"b": 1.0}, []),
    ("threshold", {"threshold": -1.0, "default_value": 3.0}, [-1.0]),
]

# TF's own gelu loses ~1e-9 absolutely in its left tail (1 + erf cancels),
# so autodiff of it is only that good; test_gelu_derivative_is_accurate checks
# ours against an independent reference instead.
AUTODIFF_ATOL = {"gelu": 1e-8}

GRID = np.linspace(-6.0, 6.0, 2001)


def _grid_without(kinks, width=1e-3):
    keep = np.ones_like(GRID, dtype=bool)
    for kink in kinks:
        keep &= np.abs(GRID - kink) > width
    return GRID[keep]


def _autodiff(fn, x):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    return tape.gradient(y, x).numpy()


def _assert_matches_autodiff(fn, d, kinks, atol=1e-12):
    x = _grid_without(kinks)
    expected = _autodiff(fn, x)
    actual = keras.ops.convert_to_numpy(d(tf.constant(x)))
    assert actual.dtype == np.float64
    np.testing.assert_allclose(actual, expected, rtol=1e-7, atol=atol)


# Enumeration of what Keras ships.


def test_builtin_names_cover_keras():
    names = _registry.builtin_names()
    assert names
    core = {"linear", "relu", "sigmoid", "tanh", "softmax", "gelu", "silu"}
    assert core <= set(names)
    assert {"swish", "hard_swish"} <= set(names)
    assert set(NON_ELEMENTWISE) <= set(names)
    helpers = ("get", "serialize", "deserialize")
    public = {
        n for n in dir(keras.activations) if not n.startswith("_") and n not in helpers
    }
    assert set(names) == public


def test_elementwise_names():
    elementwise = _registry.elementwise_names()
    assert {"relu", "sigmoid", "tanh", "hard_sigmoid", "linear"} <= set(elementwise)
    assert set(elementwise) == (
        set(_registry.builtin_names()) - set(NON_ELEMENTWISE)
    ) | {"lisht", "snake"}


def test_required_options_table_is_complete():
    needing_options = {
        name
        for name in _registry.builtin_names()
        if any(
            p.default is inspect.Parameter.empty
            for p in list(
                inspect.signature(getattr(keras.activations, name)).parameters.values()
            )[1:]
        )
    }
    assert needing_options == set(REQUIRED_OPTIONS)


def test_kinks_table_names_exist():
    assert set(KINKS) <= set(_registry.elementwise_names())


# get


@pytest.mark.parametrize("name", _registry.builtin_names())
def test_get_returns_the_keras_activation(name):
    act = activations.get(name)
    assert act is keras.activations.get(name)
    options = REQUIRED_OPTIONS.get(name, {})
    x = np.random.default_rng(0).normal(size=(3, 8)).astype("float32") * 3
    expected = getattr(keras.activations, name)(x, **options)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(act(x, **options)),
        keras.ops.convert_to_numpy(expected),
    )


def test_get_none_is_linear():
    assert activations.get(None) is keras.activations.linear


def test_get_callable_is_returned_as_is():
    def custom(x):
        return 2.0 * x

    assert activations.get(custom) is custom
    layer = keras.layers.PReLU()
    assert activations.get(layer) is layer


def test_get_unknown_name_lists_close_names():
    with pytest.raises(ValueError) as info:
        activations.get("tanhh")
    message = str(info.value)
    assert "'tanhh'" in message
    assert "Did you mean: 'tanh', 'tanh_shrink'" in message
    assert "Valid names:" in message and "sigmoid" in message


def test_get_unknown_name_without_close_names():
    with pytest.raises(ValueError, match="Unknown activation 'zzzz'") as info:
        activations.get("zzzz")
    assert "Did you mean" not in str(info.value)


def test_get_wrong_case_suggests_the_name():
    with pytest.raises(ValueError, match="Did you mean: 'relu'"):
        activations.get("ReLU")


@pytest.mark.parametrize("value", [3, 1.5, True, ["relu"]])
def test_get_wrong_type(value):
    with pytest.raises(TypeError) as info:
        activations.get(value)
    assert repr(value) in str(info.value)
    assert type(value).__name__ in str(info.value)


# serialize / deserialize


@pytest.mark.parametrize("name", _registry.builtin_names())
def test_serialize_round_trip(name):
    act = activations.get(name)
    config = activations.serialize(act)
    assert config == act.__name__
    assert activations.deserialize(config) is act
    assert activations.get(config) is act
    assert keras.activations.deserialize(config) is act


def test_serialize_alias_gives_canonical_name():
    assert activations.serialize("swish") == "silu"
    assert activations.serialize("hard_swish") == "hard_silu"


def test_serialize_none():
    assert activations.serialize(None) is None
    assert activations.deserialize(None) is keras.activations.linear


@pytest.mark.parametrize("name", ["relu", "tanh", "softmax", "swish"])
def test_dict_config_round_trip(name):
    act = activations.get(name)
    config = keras.saving.serialize_keras_object(act)
    assert isinstance(config, dict)
    assert activations.get(config) is act
    assert activations.deserialize(config) is act


def test_object_config_round_trip():
    layer = keras.layers.PReLU(alpha_initializer="ones")
    config = activations.serialize(layer)
    assert isinstance(config, dict)
    restored = activations.get(config)
    assert isinstance(restored, keras.layers.PReLU)
    assert restored.get_config() == layer.get_config()


def test_registered_custom_function_round_trip():
    @keras.saving.register_keras_serializable(package="test_activations")
    def doubled(x):
        return 2.0 * x

    config = activations.serialize(doubled)
    assert isinstance(config, dict)
    assert activations.deserialize(config) is doubled


def test_deserialize_custom_objects():
    def custom(x):
        return x

    assert activations.deserialize("custom", {"custom": custom}) is custom


def test_deserialize_wrong_type():
    with pytest.raises(TypeError, match="42"):
        activations.deserialize(42)


def test_deserialize_unknown_name():
    with pytest.raises(ValueError, match="Did you mean: 'sigmoid'"):
        activations.deserialize("sigmoi")


def test_registered_extra_is_found(monkeypatch):
    monkeypatch.setattr(_registry, "_ACTIVATIONS", dict(_registry._ACTIVATIONS))
    monkeypatch.setattr(_registry, "_DERIVATIVES", dict(_registry._DERIVATIVES))

    def cube(x):
        return x * x * x

    def cube_derivative(x):
        return 3.0 * x * x

    _registry.register_activation("cube", cube, cube_derivative)
    assert activations.get("cube") is cube
    assert activations.serialize(cube) == "cube"
    assert activations.deserialize("cube") is cube
    assert activations.derivative("cube") is cube_derivative
    assert activations.derivative(cube) is cube_derivative
    _registry.register_activation("cube", cube)  # Same object again: fine.
    with pytest.raises(ValueError, match="already registered"):
        _registry.register_activation("cube", lambda x: x)

    # A class entry (a learnable activation) is instantiated per `get`.
    _registry.register_activation("prelu_test", keras.layers.PReLU)
    first = activations.get("prelu_test")
    assert isinstance(first, keras.layers.PReLU)
    assert activations.get("prelu_test") is not first


# derivative


@pytest.mark.parametrize("name", _registry.elementwise_names())
def test_derivative_matches_autodiff(name):
    options = REQUIRED_OPTIONS.get(name, {})
    fn = functools.partial(activations.get(name), **options)
    d = functools.partial(activations.derivative(name), **options)
    atol = AUTODIFF_ATOL.get(name, 1e-12)
    _assert_matches_autodiff(fn, d, KINKS.get(name, []), atol)


@pytest.mark.parametrize(
    "name, options, kinks",
    OPTION_VARIANTS,
    ids=[f"{n}-{'-'.join(map(str, o.values()))}" for n, o, _ in OPTION_VARIANTS],
)
def test_derivative_with_options_matches_autodiff(name, options, kinks):
    fn = functools.partial(activations.get(name), **options)
    atol = AUTODIFF_ATOL.get(name, 1e-12)
    _assert_matches_autodiff(fn, activations.derivative(fn), kinks, atol)


@pytest.mark.parametrize("approximate", [False, True])
def test_gelu_derivative_is_accurate(approximate):
    def reference(v):
        if approximate:
            c = math.sqrt(2.0 / math.pi)
            u = c * (v + 0.044715 * v**3)
            s = 1.0 / (1.0 + math.exp(-2.0 * u))
            sech2 = 1.0 / math.cosh(u) ** 2
            return s + 0.5 * v * sech2 * c * (1.0 + 3.0 * 0.044715 * v * v)
        cdf = 0.5 * math.erfc(-v / math.sqrt(2.0))
        return cdf + v * math.exp(-0.5 * v * v) / math.sqrt(2.0 * math.pi)

    d = activations.derivative("gelu")(GRID, approximate=approximate)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(d),
        [reference(v) for v in GRID],
        rtol=1e-11,
        atol=1e-15,
    )


@pytest.mark.parametrize("name", _registry.elementwise_names())
def test_derivative_takes_the_activation_options(name):
    activation = inspect.signature(activations.get(name)).parameters
    d = inspect.signature(activations.derivative(name)).parameters
    assert [(p.name, p.default) for p in d.values()] == [
        (p.name, p.default) for p in activation.values()
    ]


@pytest.mark.parametrize("name", _registry.elementwise_names())
def test_derivative_keeps_float32(name):
    x = tf.constant([-2.0, 0.5, 2.0], dtype="float32")
    options = REQUIRED_OPTIONS.get(name, {})
    y = activations.derivative(name)(x, **options)
    assert keras.backend.standardize_dtype(y.dtype) == "float32"
    assert tuple(y.shape) == (3,)


def test_derivative_of_int_input_is_float():
    y = activations.derivative("relu")(tf.constant([-1, 2]))
    assert keras.backend.standardize_dtype(y.dtype) == keras.config.floatx()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(y), [0.0, 1.0])


def test_derivative_textbook_formulas():
    x = np.linspace(-4.0, 4.0, 33)
    sigma = 1.0 / (1.0 + np.exp(-x))

    def d(name):
        return keras.ops.convert_to_numpy(activations.derivative(name)(x))

    np.testing.assert_allclose(d("sigmoid"), sigma * (1 - sigma), rtol=1e-12)
    np.testing.assert_allclose(d("tanh"), 1 - np.tanh(x) ** 2, rtol=1e-12)
    np.testing.assert_array_equal(d("relu"), (x > 0).astype(float))
    np.testing.assert_array_equal(
        d("hard_sigmoid"), np.where(np.abs(x) < 3, 1 / 6, 0.0)
    )
    np.testing.assert_array_equal(d("leaky_relu"), np.where(x > 0, 1.0, 0.2))


def test_derivative_accepts_functions_and_aliases():
    for name in ["sigmoid", "tanh", "relu", "swish", "hard_swish"]:
        act = activations.get(name)
        assert activations.derivative(act) is activations.derivative(name)
    assert activations.derivative("swish") is _derivatives.silu_derivative
    assert activations.derivative(None) is _derivatives.linear_derivative


@pytest.mark.parametrize("name", NON_ELEMENTWISE)
def test_derivative_of_non_elementwise_raises(name):
    with pytest.raises(ValueError, match="elementwise activations only"):
        activations.derivative(name)
    with pytest.raises(ValueError, match="elementwise activations only"):
        activations.derivative(activations.get(name))


def test_derivative_unknown_name_same_error_as_get():
    with pytest.raises(ValueError) as from_get:
        activations.get("tanhh")
    with pytest.raises(ValueError) as from_derivative:
        activations.derivative("tanhh")
    assert str(from_derivative.value) == str(from_get.value)


def test_derivative_of_unknown_callable_raises():
    def custom(x):
        return x

    with pytest.raises(ValueError, match="No analytic derivative"):
        activations.derivative(custom)


def test_derivative_wrong_type():
    with pytest.raises(TypeError, match="int"):
        activations.derivative(3)


# API surface and documentation


def test_public_api():
    assert sorted(activations.__all__) == sorted(
        [
            "APL",
            "LearnableActivation",
            "PReLU",
            "Pade",
            "ParametricActivation",
            "PureActivation",
            "RReLU",
            "Snake",
            "Swish",
            "derivative",
            "deserialize",
            "get",
            "lisht",
            "pade_coefficients",
            "rrelu",
            "search",
            "serialize",
            "snake",
        ]
    )
    from keras_feedback._api import PUBLIC_SYMBOLS

    for name in activations.__all__:
        path = f"keras_feedback.activations.{name}"
        assert PUBLIC_SYMBOLS[path] is getattr(activations, name)


def test_derivatives_compile_with_xla():
    names = _registry.elementwise_names()
    x = tf.constant(np.linspace(-5.0, 5.0, 11), dtype="float32")

    def all_derivatives(x):
        return [
            activations.derivative(n)(x, **REQUIRED_OPTIONS.get(n, {})) for n in names
        ]

    compiled = tf.function(all_derivatives, jit_compile=True)(x)
    for eager, xla in zip(all_derivatives(x), compiled):
        np.testing.assert_allclose(xla.numpy(), eager.numpy(), atol=1e-6)
