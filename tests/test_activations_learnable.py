"""Learnable activations, the fixed extras, and their use inside the cell."""

import re

import keras
import numpy as np
import numpy_reference
import pytest
import tensorflow as tf
from numpy_reference import feedback_sequence

import keras_feedback
from keras_feedback import activations
from keras_feedback import export
from keras_feedback.activations import _registry
from keras_feedback.layers import Feedback
from keras_feedback.layers import FeedbackCell

# --- numpy references: value, d/dx and d/dparameter, from the formulas ---


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _prelu(p, x):
    a = p["alpha"]
    value = np.maximum(x, 0) + a * np.minimum(x, 0)
    return value, np.where(x > 0, 1.0, a), {"alpha": np.minimum(x, 0)}


def _swish(p, x):
    b = p["beta"]
    s = _sigmoid(b * x)
    return x * s, s + b * x * s * (1 - s), {"beta": x * x * s * (1 - s)}


def _snake(p, x):
    a = p["frequency"]
    value = x + np.sin(a * x) ** 2 / a
    grad_a = x * np.sin(2 * a * x) / a - np.sin(a * x) ** 2 / a**2
    return value, 1 + np.sin(2 * a * x), {"frequency": grad_a}


def _pade(p, x):
    a, b = p["numerator"], p["denominator"]
    num = sum(a[j] * x**j for j in range(len(a)))
    d_num = sum(j * a[j] * x ** (j - 1) for j in range(1, len(a)))
    r = sum(b[k - 1] * x**k for k in range(1, len(b) + 1))
    d_r = sum(k * b[k - 1] * x ** (k - 1) for k in range(1, len(b) + 1))
    q = 1 + np.abs(r)
    grads = {
        "numerator": np.stack([x**j / q for j in range(len(a))]),
        "denominator": np.stack(
            [-num * np.sign(r) * x**k / q**2 for k in range(1, len(b) + 1)]
        ),
    }
    return num / q, d_num / q - num * np.sign(r) * d_r / q**2, grads


def _apl(p, x):
    a, b = p["slopes"], p["hinges"]
    value = np.maximum(x, 0) + sum(
        a[s] * np.maximum(b[s] - x, 0) for s in range(len(a))
    )
    d_x = (x > 0).astype(float) - sum(a[s] * (b[s] > x) for s in range(len(a)))
    grads = {
        "slopes": np.stack([np.maximum(b[s] - x, 0) for s in range(len(a))]),
        "hinges": np.stack([a[s] * (b[s] > x) for s in range(len(a))]),
    }
    return value, d_x, grads


# (id, constructor, numpy reference, random parameter values)
LEARNABLE = [
    ("prelu", lambda **kw: activations.PReLU(**kw), _prelu),
    ("swish", lambda **kw: activations.Swish(**kw), _swish),
    ("snake", lambda **kw: activations.Snake(**kw), _snake),
    ("pade", lambda **kw: activations.Pade("tanh", 3, 2, **kw), _pade),
    ("apl", lambda **kw: activations.APL(segments=3, **kw), _apl),
]
UNITS = 5


def _random_params(act, rng, spread=None):
    """Gives every parameter random values: magnitudes in [0.3, 1.5] with
    random signs, or, with ``spread``, the initial values moved by up to it."""
    values = {}
    for name in act.PARAMETERS:
        variable = getattr(act, name)
        if spread is None:
            value = rng.uniform(0.3, 1.5, size=variable.shape)
            value *= rng.choice([-1.0, 1.0], size=variable.shape)
        else:
            value = variable.numpy() + rng.uniform(-spread, spread, variable.shape)
        if name == "frequency":
            value = np.abs(value)
        variable.assign(value)
        values[name] = variable.numpy().astype("float64")
    return values


def _inputs(rng, shape=(4, UNITS)):
    # Away from 0 (kinks of prelu, |r| of pade) and rounded away from apl's
    # hinges by the random draw.
    x = rng.uniform(0.2, 2.5, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    return x


def _built(make, per_unit):
    act = make(per_unit=per_unit, dtype="float64")
    act.build((None, UNITS))
    return act


@pytest.mark.parametrize("per_unit", [True, False], ids=["per_unit", "shared"])
@pytest.mark.parametrize(
    "name, make, reference", LEARNABLE, ids=[c[0] for c in LEARNABLE]
)
def test_forward_and_gradients_equal_numpy(name, make, reference, per_unit, rng):
    act = _built(make, per_unit)
    params = _random_params(act, rng)
    if name == "apl":  # hinges: keep the inputs off them
        x = _inputs(rng)
        for s in range(3):
            near = np.abs(x - params["hinges"][s]) < 0.05
            x = np.where(near, x + 0.1, x)
    else:
        x = _inputs(rng)
    weights = rng.normal(size=x.shape)
    expected, d_x, d_params = reference(params, x)
    x_t = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x_t)
        y = act(x_t)
        loss = tf.reduce_sum(y * weights)
    grads = tape.gradient(loss, [x_t] + [getattr(act, n) for n in act.PARAMETERS])
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grads[0].numpy(), weights * d_x, rtol=1e-10, atol=1e-12)
    for n, grad in zip(act.PARAMETERS, grads[1:]):
        # d loss / d p = sum over the batch (and over the units if shared).
        reduce_axes = (-2,) if per_unit else (-2, -1)
        expected_grad = np.sum(weights * d_params[n], axis=reduce_axes)
        np.testing.assert_allclose(grad.numpy(), expected_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "name, make, reference", LEARNABLE, ids=[c[0] for c in LEARNABLE]
)
def test_parameter_gradients_equal_finite_differences(name, make, reference, rng):
    act = _built(make, per_unit=True)
    _random_params(act, rng)
    x = tf.constant(_inputs(rng, (3, UNITS)))
    weights = rng.normal(size=(3, UNITS))

    def loss():
        return float(tf.reduce_sum(act(x) * weights))

    variables = [getattr(act, n) for n in act.PARAMETERS]
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(act(x) * weights)
    autodiff = tape.gradient(value, variables)
    eps = 1e-6
    for variable, grad in zip(variables, autodiff):
        base = variable.numpy()
        numeric = np.zeros_like(base)
        for index in np.ndindex(base.shape):
            for sign in (1, -1):
                shifted = base.copy()
                shifted[index] += sign * eps
                variable.assign(shifted)
                numeric[index] += sign * loss() / (2 * eps)
        variable.assign(base)
        np.testing.assert_allclose(grad.numpy(), numeric, rtol=1e-6, atol=1e-8)


# --- Padé initialisation -------------------------------------------------


def _documented_pade_bounds():
    rows = re.findall(
        r"\|\s*([\w /]+?)\s*\|\s*<\s*([0-9.e-]+)\s*\|", activations.Pade.__doc__
    )
    bounds = {}
    for names, bound in rows:
        for name in names.split("/"):
            bounds[name.strip()] = float(bound)
    return bounds


def test_pade_initial_error_within_documented_bounds():
    bounds = _documented_pade_bounds()
    assert {"tanh", "relu", "swish", "silu", "sigmoid", "gelu", "leaky_relu"} <= set(
        bounds
    )
    x = np.linspace(-3.0, 3.0, 20001).astype("float32")[None]
    for name, bound in bounds.items():
        act = activations.Pade(name, per_unit=False)
        y = keras.ops.convert_to_numpy(act(x))
        target = keras.ops.convert_to_numpy(activations.get(name)(x.astype("float64")))
        error = np.abs(y - target).max()
        assert error < bound, (name, error, bound)
        # A meaningful bound: a unit that approximates tanh is not within it
        # of relu.
        other = "relu" if name != "relu" else "tanh"
        assert np.abs(y - activations.get(other)(x.astype("float64"))).max() > bound


def test_pade_coefficients_follow_the_target_symmetry():
    a, b = activations.pade_coefficients("tanh")
    # tanh is odd: even numerator powers and odd denominator powers vanish.
    np.testing.assert_allclose(a[::2], 0.0, atol=1e-8)
    np.testing.assert_allclose(b[::2], 0.0, atol=1e-8)
    assert len(a) == 6 and len(b) == 4
    a2, b2 = activations.pade_coefficients("tanh")
    a2[0] = 99.0  # The cache hands out copies.
    np.testing.assert_array_equal(activations.pade_coefficients("tanh")[0], a)


# --- fixed extras --------------------------------------------------------

GRID = np.linspace(-5.0, 5.0, 1001)


def _autodiff(fn, x):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    return tape.gradient(y, x).numpy()


@pytest.mark.parametrize(
    "name, options, reference, derivative",
    [
        (
            "lisht",
            {},
            lambda x: x * np.tanh(x),
            lambda x: np.tanh(x) + x / np.cosh(x) ** 2,
        ),
        ("snake", {}, lambda x: x + np.sin(x) ** 2, lambda x: 1 + np.sin(2 * x)),
        (
            "snake",
            {"frequency": 2.5},
            lambda x: x + np.sin(2.5 * x) ** 2 / 2.5,
            lambda x: 1 + np.sin(5 * x),
        ),
        (
            "rrelu",
            {},
            lambda x: np.where(x >= 0, x, (1 / 8 + 1 / 3) / 2 * x),
            lambda x: np.where(x >= 0, 1.0, (1 / 8 + 1 / 3) / 2),
        ),
        (
            "rrelu",
            {"lower": 0.1, "upper": 0.3},
            lambda x: np.where(x >= 0, x, 0.2 * x),
            lambda x: np.where(x >= 0, 1.0, 0.2),
        ),
    ],
)
def test_fixed_extras_and_derivatives(name, options, reference, derivative):
    fn = getattr(activations, name)
    x = GRID[np.abs(GRID) > 1e-3]
    np.testing.assert_allclose(
        fn(tf.constant(x), **options).numpy(), reference(x), rtol=1e-12
    )
    d = activations.derivative(name)
    np.testing.assert_allclose(
        d(tf.constant(x), **options).numpy(), derivative(x), rtol=1e-12, atol=1e-14
    )
    np.testing.assert_allclose(
        d(tf.constant(x), **options).numpy(),
        _autodiff(lambda v: fn(v, **options), x),
        rtol=1e-10,
        atol=1e-12,
    )


def test_extras_are_registered_by_name():
    assert activations.get("lisht") is activations.lisht
    assert activations.get("snake") is activations.snake
    assert activations.serialize(activations.lisht) == "lisht"
    assert activations.derivative(activations.snake) is activations.derivative("snake")
    assert isinstance(activations.get("rrelu"), activations.RReLU)
    for name, cls in [
        ("prelu", activations.PReLU),
        ("learnable_swish", activations.Swish),
        ("learnable_snake", activations.Snake),
        ("pade", activations.Pade),
        ("apl", activations.APL),
    ]:
        first = activations.get(name)
        assert isinstance(first, cls)
        assert activations.get(name) is not first  # a fresh instance each time


def test_rrelu_random_in_training_mean_at_inference():
    x = -np.ones((200, 50))
    slopes = -activations.rrelu(tf.constant(x), 0.1, 0.3, training=True, seed=3).numpy()
    assert slopes.min() >= 0.1 and slopes.max() <= 0.3
    assert slopes.std() > 0.03  # uniform on [0.1, 0.3]: std 0.058
    assert abs(slopes.mean() - 0.2) < 0.01
    # The derivative in training draws the same slopes for the same int seed.
    d = activations.derivative("rrelu")(tf.constant(x), 0.1, 0.3, training=True, seed=3)
    np.testing.assert_allclose(d.numpy(), slopes, rtol=1e-12)
    layer = activations.RReLU(0.1, 0.3, seed=1, dtype="float64")
    trained = -layer(x, training=True).numpy()
    assert trained.min() >= 0.1 and trained.max() <= 0.3 and trained.std() > 0.03
    np.testing.assert_allclose(layer(x).numpy(), -0.2 * np.ones_like(x))


# --- inside the cell -----------------------------------------------------


def _np_activation(make, values):
    reference = dict((c[0], c[2]) for c in LEARNABLE)[make]
    return lambda x: reference(values, x)[0]


def _randomise_cell(layer, rng):
    """Random cell weights and activation parameters, as float64 arrays."""
    weights = {}
    for name, v in layer.cell._param_variables().items():
        v.assign(rng.normal(scale=0.4, size=v.shape))
        weights[name] = v.numpy().astype("float64")
    values = {
        slot: _random_params(act, rng, spread=0.3)
        for slot, (act, _) in layer.cell._parametric_activations().items()
    }
    return weights, values


@pytest.mark.parametrize("core", ["simple", "gru", "lstm"])
def test_cell_with_learnable_activations_equals_numpy(core, rng, monkeypatch):
    layer = Feedback(
        4,
        feedback_units=3,
        core=core,
        activation=activations.Snake(),
        recurrent_activation=activations.Swish(),
        feedback_activation=activations.Pade("sigmoid", 3, 2),
        output_units=2,
        output_activation=activations.APL(segments=2),
        return_sequences=True,
        engine="reference",
    )
    x = rng.normal(size=(3, 6, 5)).astype("float32")
    layer(x)
    weights, values = _randomise_cell(layer, rng)
    names = {
        "activation": "snake",
        "recurrent_activation": "swish",
        "feedback_activation": "pade",
        "output_activation": "apl",
    }
    for slot, kind in names.items():
        monkeypatch.setitem(
            numpy_reference.ACTIVATIONS,
            f"test_{slot}",
            _np_activation(kind, values[slot]),
        )
    cfg = dict(
        core=core,
        units=4,
        feedback_units=3,
        output_units=2,
        **{slot: f"test_{slot}" for slot in names},
    )
    expected, _, _ = feedback_sequence(weights, x.astype("float64"), cfg)
    for engine in ("reference", "xla"):
        layer.engine = engine
        np.testing.assert_allclose(layer(x).numpy(), expected, rtol=2e-5, atol=2e-5)


def test_activation_parameter_gradients_through_both_engines(rng):
    x = tf.constant(rng.normal(size=(3, 7, 4)).astype("float32"))

    def build(engine, dtype="float32"):
        keras.utils.set_random_seed(3)
        layer = Feedback(
            5,
            feedback_units=2,
            core="gru",
            engine=engine,
            dtype=dtype,
            activation=activations.Pade("tanh", 3, 2, dtype=dtype),
            feedback_activation=activations.Snake(1.5, dtype=dtype),
            output_units=3,
            output_activation=activations.PReLU(dtype=dtype),
            return_sequences=True,
        )
        layer(tf.cast(x, dtype))
        return layer

    reference, fused = build("reference"), build("xla")
    fused.set_weights(reference.get_weights())
    grads = {}
    for layer in (reference, fused):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x) ** 2)
        grads[layer.engine] = tape.gradient(loss, layer.trainable_weights)
    names = [v.path.split("/", 1)[1] for v in reference.trainable_weights]
    assert [n.rsplit("/", 1)[1] for n in names[-4:]] == [
        "numerator",
        "denominator",
        "frequency",
        "alpha",
    ]
    for name, a, b in zip(names, grads["reference"], grads["xla"]):
        assert a is not None and b is not None, name
        np.testing.assert_allclose(
            b.numpy(), a.numpy(), rtol=1e-4, atol=1e-5, err_msg=name
        )
    # Finite differences through the whole loop, in float64, of one
    # parameter of each activation, against the XLA engine's gradient.
    precise = build("xla", "float64")
    x64 = tf.cast(x, tf.float64)
    precise.set_weights([w.astype("float64") for w in reference.get_weights()])
    cell = precise.cell
    variables = [
        cell.activation.numerator,
        cell.activation.denominator,
        cell.feedback_activation.frequency,
        cell.output_activation.alpha,
    ]
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(precise(x64) ** 2)
    autodiff = tape.gradient(loss, variables)
    eps = 1e-6
    for variable, grad in zip(variables, autodiff):
        base = variable.numpy()
        index = (1, 0) if base.ndim == 2 else (0,)
        losses = []
        for sign in (1, -1):
            shifted = base.copy()
            shifted[index] += sign * eps
            variable.assign(shifted)
            losses.append(float(tf.reduce_sum(precise(x64) ** 2)))
        variable.assign(base)
        numeric = (losses[0] - losses[1]) / (2 * eps)
        assert abs(numeric) > 1e-4, variable.path
        np.testing.assert_allclose(
            grad.numpy()[index], numeric, rtol=1e-5, err_msg=variable.path
        )


def test_weight_order_and_groups():
    cell = FeedbackCell(
        4,
        feedback_units=2,
        core="lstm",
        activation=activations.APL(),
        feedback_activation=activations.Snake(),
    )
    cell.build((None, 3))
    own = [
        "kernel",
        "recurrent_kernel",
        "bias",
        "feedback_recurrent_kernel",
        "feedback_kernel",
        "feedback_bias",
    ]
    assert [v.name for v in cell.weights] == own + ["slopes", "hinges", "frequency"]
    keras_cell = keras.layers.LSTMCell(4)
    keras_cell.build((None, 3))
    assert [v.name for v in keras_cell.weights] == own[:3]
    assert cell.activation.slopes.shape == (2, 4)  # per unit: units
    assert cell.feedback_activation.frequency.shape == (2,)  # feedback_units
    feedback = {id(v) for v in cell.feedback_weights}
    assert id(cell.feedback_activation.frequency) in feedback
    assert id(cell.activation.slopes) not in feedback
    assert {id(v) for v in cell.feedforward_weights} | feedback == {
        id(v) for v in cell.weights
    }
    params = cell.step_params()
    assert set(params["activation"]) == {"slopes", "hinges"}
    assert set(params["feedback_activation"]) == {"frequency"}
    assert "frequency" not in params


def test_step_spec_holds_a_pure_function_equal_across_cells():
    a = FeedbackCell(3, activation=activations.Snake(2.0))
    b = FeedbackCell(3, activation="learnable_snake")
    assert isinstance(a.spec.activation, activations.PureActivation)
    assert a.spec == b.spec and hash(a.spec) == hash(b.spec)
    assert not any(isinstance(v, keras.layers.Layer) for v in vars(a.spec).values())
    assert (
        FeedbackCell(3, activation="rrelu").spec
        != FeedbackCell(3, activation=activations.RReLU(0.0, 0.5)).spec
    )


def test_rrelu_in_the_cell_is_pure_and_random_only_in_training(rng):
    x = tf.constant(rng.normal(size=(4, 6, 3)).astype("float32"))
    layer = Feedback(
        5,
        core="simple",
        feedback_units=0,
        activation="rrelu",
        return_sequences=True,
        engine="xla",
        seed=7,
    )
    inference = layer(x).numpy()
    np.testing.assert_array_equal(layer(x).numpy(), inference)
    leaky = Feedback(
        5,
        core="simple",
        feedback_units=0,
        activation=lambda v: keras.activations.leaky_relu(v, (1 / 8 + 1 / 3) / 2),
        return_sequences=True,
        engine="reference",
    )
    leaky(x)
    leaky.set_weights(layer.get_weights())
    np.testing.assert_allclose(inference, leaky(x).numpy(), rtol=1e-6, atol=1e-6)
    state = layer.cell.seed_generator.state.numpy()
    results = {}
    for engine in ("xla", "reference"):
        layer.engine = engine
        layer.cell.seed_generator.state.assign(state)
        with tf.GradientTape() as tape:
            y = layer(x, training=True)
            loss = tf.reduce_sum(y**2)
        results[engine] = (y.numpy(), tape.gradient(loss, layer.trainable_weights))
    assert np.abs(results["xla"][0] - inference).max() > 1e-3
    np.testing.assert_allclose(
        results["xla"][0], results["reference"][0], rtol=1e-5, atol=1e-6
    )
    for a, b in zip(results["xla"][1], results["reference"][1]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)


def test_keras_file_round_trip_keeps_learned_parameters(rng, tmp_path):
    x = rng.normal(size=(16, 5, 3)).astype("float32")
    y = rng.normal(size=(16, 2)).astype("float32")
    inputs = keras.Input((None, 3))
    h = Feedback(
        6,
        feedback_units=3,
        core="gru",
        activation=activations.Pade("relu"),
        recurrent_activation="learnable_swish",
        feedback_activation=activations.Snake(2.0, per_unit=False),
        output_units=4,
        output_activation=activations.APL(segments=3),
        return_sequences=True,
        engine="reference",
    )(inputs)
    h = Feedback(
        5,
        core="simple",
        activation="prelu",
        feedback_activation="rrelu",
        engine="reference",
    )(h)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    model.compile(keras.optimizers.Adam(0.05), "mse")
    initial = {v.path: v.numpy().copy() for v in model.weights}
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    learnable = [
        v for v in model.weights if re.search("pade|swish|snake|apl|p_re_lu", v.path)
    ]
    assert len(learnable) == 7
    for v in learnable:  # training moved every activation parameter
        assert np.abs(v.numpy() - initial[v.path]).max() > 1e-3, v.path
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [v.path for v in loaded.weights] == [v.path for v in model.weights]
    assert "feedback_cell/pade" in loaded.layers[1].cell.activation.numerator.path
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(
        model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    )
    cell = loaded.layers[1].cell
    assert isinstance(cell.activation, activations.Pade)
    assert cell.activation.approximates == "relu"
    assert cell.feedback_activation.per_unit is False
    assert isinstance(loaded.layers[2].cell.feedback_activation, activations.RReLU)
    config = model.layers[1].get_config()
    assert config["activation"]["registered_name"] == "keras_feedback>Pade"
    assert config["recurrent_activation"]["config"]["beta"] == 1.0


def test_litert_export_with_builtin_ops_only(rng, tmp_path):
    inputs = keras.Input((None, 3))
    h = Feedback(
        6,
        feedback_units=3,
        core="gru",
        activation=activations.Pade("tanh"),
        recurrent_activation=activations.Swish(),
        feedback_activation="learnable_snake",
        output_units=4,
        output_activation=activations.APL(),
        return_sequences=True,
    )(inputs)
    h = Feedback(
        5, core="simple", activation=activations.PReLU(), feedback_activation="rrelu"
    )(h)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    model(np.zeros((1, 2, 3), "float32"))
    for v in model.weights:
        if re.search("pade|swish|snake|apl|p_re_lu", v.path):
            v.assign(v.numpy() + rng.uniform(0.05, 0.2, size=v.shape))
    path = export.export_litert(model, tmp_path / "model.tflite")
    ops = export.litert_ops(path)
    assert all(re.fullmatch(r"[A-Z0-9_]+", op) for op in ops), ops
    assert "WHILE" in ops and "SIN" in ops and "ABS" in ops
    report = export.verify_litert(
        model, path, rng.normal(size=(3, 7, 3)).astype("float32")
    )
    assert report["max_abs_error"] < 1e-5, report["max_abs_error"]


# --- bad input -----------------------------------------------------------


def test_unknown_names_list_close_ones():
    with pytest.raises(ValueError, match="Did you mean: 'learnable_snake'"):
        activations.get("learnable_snak")
    with pytest.raises(ValueError, match="Did you mean: 'snake'"):
        activations.get("snak")
    with pytest.raises(ValueError, match="Did you mean: 'pade'"):
        Feedback(3, activation="padex")
    with pytest.raises(ValueError, match="Did you mean: 'tanh'"):
        activations.Pade("tanhh")


@pytest.mark.parametrize(
    "make, pattern",
    [
        (
            lambda: activations.Snake(frequency=0.0),
            r"`frequency` must be a finite number > 0.0, got 0.0",
        ),
        (lambda: activations.Snake(frequency=-1), r"`frequency`.*got -1"),
        (lambda: activations.Snake(frequency=float("nan")), r"`frequency`.*got nan"),
        (lambda: activations.snake(1.0, frequency=0), r"`frequency`.*got 0"),
        (lambda: activations.PReLU(alpha="big"), r"`alpha`.*got 'big'"),
        (lambda: activations.Swish(beta=float("inf")), r"`beta`.*got inf"),
        (
            lambda: activations.Pade("softmax"),
            r"`approximates` must name a fixed elementwise.*got 'softmax'",
        ),
        (
            lambda: activations.Pade("tanh", numerator_degree=-1),
            r"`numerator_degree`.*got -1",
        ),
        (
            lambda: activations.Pade("tanh", denominator_degree=0),
            r"`denominator_degree`.*got 0",
        ),
        (lambda: activations.Pade(["tanh"]), r"`approximates`.*got \['tanh'\]"),
        (lambda: activations.APL(segments=0), r"`segments`.*got 0"),
        (
            lambda: activations.APL(segments=2, hinges=[1.0]),
            r"`hinges` must be 2 finite.*got \[1.0\]",
        ),
        (
            lambda: activations.RReLU(lower=0.5, upper=0.1),
            r"`lower` must be <= `upper`",
        ),
        (lambda: activations.rrelu(1.0, lower=-1.0), r"`lower`.*got -1.0"),
    ],
)
def test_invalid_initial_values_are_refused(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def test_cell_refuses_activations_it_cannot_use():
    with pytest.raises(TypeError, match="Argument `activation` is a Keras layer"):
        FeedbackCell(3, activation=keras.layers.PReLU())
    shared = activations.Snake()
    with pytest.raises(
        ValueError, match="`activation` and `feedback_activation` got the same"
    ):
        FeedbackCell(3, activation=shared, feedback_activation=shared)
    with pytest.raises(
        ValueError, match="`feedback_activation`=.* no effect with feedback_units=0"
    ):
        FeedbackCell(3, feedback_units=0, feedback_activation=activations.Snake())
    with pytest.raises(
        ValueError, match="`output_activation`=.* no effect with output_units=None"
    ):
        FeedbackCell(3, output_activation=activations.PReLU())
    built = activations.PReLU()
    built.build((None, 7))
    with pytest.raises(
        ValueError, match="built for 7 units, but the cell applies it to 3"
    ):
        FeedbackCell(3, activation=built).build((None, 2))


def test_learnable_activation_in_a_dense_layer(rng):
    act = activations.Snake(per_unit=False)
    layer = keras.layers.Dense(3, activation=act)
    x = rng.normal(size=(4, 2)).astype("float32")
    y = layer(x)
    assert any(v is act.frequency for v in layer.trainable_weights)
    pre = x @ layer.kernel.numpy() + layer.bias.numpy()
    np.testing.assert_allclose(y.numpy(), pre + np.sin(pre) ** 2, rtol=1e-5, atol=1e-6)


def test_registry_names_of_the_library():
    names = set(_registry.names())
    assert {
        "lisht",
        "snake",
        "rrelu",
        "prelu",
        "learnable_swish",
        "learnable_snake",
        "pade",
        "apl",
    } <= names
    assert keras_feedback.activations.search is activations.search
