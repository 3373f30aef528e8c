"""Equilibrium: fixed points against the block's own residual and a numpy
iteration, implicit gradients against the unrolled iteration (float64),
the phantom gradient's bound, Anderson against Picard, the Jacobian penalty,
metrics in fit, divergence, saving, export, and clear errors."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import LayerTestCase

import keras_feedback

Equilibrium = keras_feedback.layers.Equilibrium


def _dense(width_in, width_out, lipschitz, rng, name=None, activation="tanh"):
    """A Dense layer whose kernel has spectral norm ``lipschitz``."""
    layer = keras.layers.Dense(width_out, activation=activation, name=name)
    layer.build((None, width_in))
    kernel = rng.standard_normal((width_in, width_out))
    layer.kernel.assign(lipschitz * kernel / np.linalg.norm(kernel, 2))
    layer.bias.assign(0.5 * rng.standard_normal(width_out))
    return layer


def _problem(feedback, rng, lipschitz=0.7, width=4, **kwargs):
    """A contractive block for ``feedback`` and its Equilibrium layer.

    ``concat``: a functional block whose features are fed back and whose
    head is the output; ``gate``: a Dense block with a projection; ``add``:
    a Dense block fed back as it is.
    """
    if feedback == "concat":
        inputs = keras.Input((2 * width,), dtype=keras.config.dtype_policy().name)
        features = _dense(2 * width, width, lipschitz, rng, name="features")
        head = _dense(width, 2, 1.0, rng, name="head", activation=None)
        block = keras.Model(inputs, head(features(inputs)))
        kwargs.setdefault("feedback_from", "features")
    elif feedback == "gate":
        block = _dense(width, width, lipschitz, rng)
        projection = _dense(width, width, 0.9, rng, activation=None)
        kwargs.setdefault("projection", projection)
    else:
        block = _dense(width, width, lipschitz, rng)
    layer = Equilibrium(block, feedback=feedback, engine="reference", **kwargs)
    x = rng.standard_normal((3, width))
    layer.fixed_point(x)
    if feedback == "gate":
        layer.gate_kernel.assign(0.3 * rng.standard_normal((2 * width, width)))
        layer.gate_bias.assign(0.3 * rng.standard_normal(width))
    return layer, tf.constant(x)


def _residuals(layer, x, z):
    """The relative residual of ``z``, with the block called as Keras does."""
    fed = layer._run_block(layer._combine(x, z), False)[1]
    return np.linalg.norm(fed - z, axis=-1) / np.linalg.norm(z, axis=-1)


# --- the fixed point ----------------------------------------------------------


@pytest.mark.parametrize("solver", ["picard", "anderson"])
@pytest.mark.parametrize("feedback", ["concat", "add", "gate"])
def test_solution_satisfies_the_tolerance(feedback, solver):
    keras.config.set_dtype_policy("float64")
    rng = np.random.default_rng(3)
    layer, x = _problem(feedback, rng, solver=solver, tolerance=1e-6)
    solution = layer.fixed_point(x)
    assert np.all(solution.converged)
    residual = _residuals(layer, x, solution.state)
    assert np.all(residual < 1e-6)
    np.testing.assert_allclose(solution.residual, residual, rtol=1e-6)
    assert np.all(solution.iterations > 1)


def test_fixed_point_equals_numpy_iteration():
    keras.config.set_dtype_policy("float64")
    rng = np.random.default_rng(4)
    layer, x = _problem("add", rng, solver="anderson", tolerance=1e-12)
    kernel, bias = (np.asarray(w) for w in layer.block.weights)
    z = np.zeros(x.shape)
    for _ in range(200):
        z = np.tanh((x.numpy() + z) @ kernel + bias)
    np.testing.assert_allclose(layer.fixed_point(x).state, z, atol=1e-10)
    # The layer returns the block's output at the fixed point.
    np.testing.assert_allclose(layer(x), np.tanh((x + z) @ kernel + bias), atol=1e-10)


def test_anderson_needs_fewer_iterations_than_picard(capsys):
    keras.config.set_dtype_policy("float64")
    counts = {}
    for name, lipschitz in [("dense L=0.9", 0.9), ("dense L=0.97", 0.97)]:
        for solver in ("picard", "anderson"):
            rng = np.random.default_rng(5)
            layer, x = _problem(
                "add",
                rng,
                lipschitz=lipschitz,
                width=8,
                solver=solver,
                tolerance=1e-6,
                max_iterations=500,
            )
            solution = layer.fixed_point(x)
            assert np.all(solution.converged)
            counts[name, solver] = int(np.max(solution.iterations))
    for solver in ("picard", "anderson"):
        rng = np.random.default_rng(6)
        conv = keras.layers.Conv2D(3, 3, padding="same", activation="tanh")
        conv.build((None, 6, 6, 4))
        conv.kernel.assign(0.12 * rng.standard_normal(conv.kernel.shape))
        layer = Equilibrium(
            conv, solver=solver, tolerance=1e-6, max_iterations=500, engine="reference"
        )
        solution = layer.fixed_point(rng.standard_normal((2, 6, 6, 1)))
        assert np.all(solution.converged)
        counts["conv concat", solver] = int(np.max(solution.iterations))
    with capsys.disabled():
        print(f"\niterations to tolerance 1e-6 (picard, anderson): {counts}")
    for problem in {name for name, _ in counts}:
        assert counts[problem, "anderson"] < counts[problem, "picard"]


def test_initial_state_at_the_fixed_point_converges_at_once():
    keras.config.set_dtype_policy("float64")
    layer, x = _problem("add", np.random.default_rng(7), tolerance=1e-8)
    solution = layer.fixed_point(x)
    again = layer.fixed_point(x, initial_state=solution.state)
    np.testing.assert_array_equal(again.iterations, [1, 1, 1])
    np.testing.assert_allclose(again.state, solution.state, atol=1e-7)
    with pytest.raises(ValueError, match=r"`initial_state` must have the shape"):
        layer.fixed_point(x, initial_state=tf.zeros((3, 5), "float64"))


# --- gradients ----------------------------------------------------------------


def _gradients(layer, x):
    cotangent = tf.constant(np.linspace(-1.0, 1.5, np.prod(layer(x).shape[1:])))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(tf.sin(layer(x)) * cotangent)
    grads = tape.gradient(loss, [x] + layer.trainable_weights)
    return [np.asarray(g) for g in grads]


def _relative(actual, expected):
    return np.linalg.norm(actual - expected) / np.linalg.norm(expected)


@pytest.mark.parametrize("solver", ["picard", "anderson"])
@pytest.mark.parametrize("feedback", ["concat", "add", "gate"])
def test_implicit_gradients_equal_the_unrolled_iteration(feedback, solver):
    keras.config.set_dtype_policy("float64")
    tight = dict(solver=solver, tolerance=1e-13, max_iterations=300)
    layer, x = _problem(feedback, np.random.default_rng(8), **tight)
    implicit = _gradients(layer, x)
    assert len(implicit) == 1 + len(layer.trainable_weights) >= 3
    unrolled = Equilibrium.from_config(
        {**layer.get_config(), "gradient": "unrolled", "solver": "picard"}
    )
    unrolled.build(tuple(x.shape))
    unrolled.set_weights(layer.get_weights())
    for a, b in zip(implicit, _gradients(unrolled, x)):
        assert _relative(a, b) < 1e-6


def test_implicit_gradient_of_the_inputs_matches_finite_differences():
    keras.config.set_dtype_policy("float64")
    rng = np.random.default_rng(9)
    layer, x = _problem("gate", rng, tolerance=1e-13)
    grad = _gradients(layer, x)[0]
    cotangent = np.linspace(-1.0, 1.5, 4)
    eps = 1e-6
    for _ in range(2):
        direction = rng.standard_normal(x.shape)
        up = np.sum(np.sin(layer(x + eps * direction)) * cotangent)
        down = np.sum(np.sin(layer(x - eps * direction)) * cotangent)
        np.testing.assert_allclose(
            np.sum(grad * direction), (up - down) / (2 * eps), rtol=1e-7
        )


def test_phantom_gradient_within_its_bound(capsys):
    # f(z) = tanh(W (x + z) + b), ||W|| = L: J = diag(tanh') W has norm <= L,
    # and so has df/dx. The phantom adjoint after K damped steps (damping
    # λ) misses the exact one by at most ρ^K ||g*||, ρ = 1 - λ (1 - L), and
    # ||g*|| <= ||u|| / (1 - L) with u = dL/dz* = J^T dL/dy, ||u|| <= L
    # ||dL/dy||; so per example ||∇x phantom - ∇x implicit|| <= L^2 ρ^K
    # ||dL/dy|| / (1 - L) (docs/equilibrium.md).
    keras.config.set_dtype_policy("float64")
    lipschitz, steps, damping = 0.7, 5, 0.5
    layer, x = _problem("add", np.random.default_rng(10), tolerance=1e-13)
    implicit = _gradients(layer, x)
    phantom = Equilibrium.from_config(
        {
            **layer.get_config(),
            "gradient": "phantom",
            "phantom_steps": steps,
            "phantom_damping": damping,
        }
    )
    phantom.build(tuple(x.shape))
    phantom.set_weights(layer.get_weights())
    approximate = _gradients(phantom, x)
    y = np.asarray(layer(x))
    upstream = np.cos(y) * np.linspace(-1.0, 1.5, 4)
    rho = 1 - damping * (1 - lipschitz)
    bound = (
        lipschitz**2 * rho**steps * np.linalg.norm(upstream, axis=-1) / (1 - lipschitz)
    )
    error = np.linalg.norm(approximate[0] - implicit[0], axis=-1)
    weights = [_relative(a, b) for a, b in zip(approximate[1:], implicit[1:])]
    with capsys.disabled():
        print(
            f"\nphantom (K={steps}, λ={damping}) input-gradient error {error} "
            f"<= bound {bound}; weights' relative errors {np.round(weights, 4)}"
        )
    assert np.all(error <= bound)
    assert np.all(error > 0)


# --- Jacobian regularisation ----------------------------------------------------


def test_jacobian_penalty_is_the_frobenius_norm():
    # A linear block with kernel s Q (Q orthogonal): J = s Q^T, and with a
    # Rademacher probe the estimate ||ε^T J||^2 = s^2 d is exact.
    keras.config.set_dtype_policy("float64")
    rng = np.random.default_rng(11)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    block = keras.layers.Dense(6)
    block.build((None, 6))
    block.kernel.assign(0.5 * q)
    layer = Equilibrium(
        block, feedback="add", jacobian_regularization=0.1, engine="reference"
    )
    x = rng.standard_normal((4, 6))
    layer(x, training=False)
    assert not layer.losses
    layer(x, training=True)
    (penalty,) = layer.losses
    np.testing.assert_allclose(penalty, 0.1 * 0.25 * 6, rtol=1e-10)
    # It is differentiated through: quadratic in the kernel K, so whatever
    # the probes, <dP/dK, K> = 2 P (Euler's theorem on homogeneous functions).
    with tf.GradientTape() as tape:
        layer(x, training=True)
        value = layer.losses[-1]
    grad = tape.gradient(value, layer.block.kernel)
    np.testing.assert_allclose(np.sum(grad * 0.5 * q), 2 * value, rtol=1e-10)


# --- metrics, fit, divergence ----------------------------------------------------


def test_metrics_in_fit_logs_and_evaluate(rng):
    block = keras.layers.Dense(4, activation="tanh", name="block")
    inputs = keras.Input((4,))
    layer = Equilibrium(
        block, feedback="add", solver="picard", tolerance=1e-5, name="deq"
    )
    model = keras.Model(inputs, keras.layers.Dense(1)(layer(inputs)))
    model.compile("adam", "mse", jit_compile=True)
    x = rng.standard_normal((32, 4)).astype("float32")
    y = rng.standard_normal((32, 1)).astype("float32")
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    for name in ("deq_iterations", "deq_residual", "deq_unconverged"):
        assert name in history.history
    assert history.history["deq_iterations"][-1] > 1
    logs = model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    solution = layer.fixed_point(x)
    # The compiled step and the eager call may round differently: one
    # example of 32 stopping one iteration apart moves the mean by 0.03.
    np.testing.assert_allclose(
        logs["deq_iterations"], np.mean(solution.iterations), atol=0.1
    )
    np.testing.assert_allclose(
        logs["deq_residual"], np.mean(solution.residual), rtol=0.2
    )
    assert logs["deq_unconverged"] == np.sum(~np.asarray(solution.converged))


class _Scale(keras.layers.Layer):
    """``f([x; z]) = x[:, :1] * z + b``: diverges for examples with |x_0| > 1."""

    def build(self, input_shape):
        self.b = self.add_weight(shape=(1,), initializer="ones", name="b")

    def call(self, inputs):
        return inputs[:, :1] * inputs[:, 1:] + self.b

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)


def test_divergence_is_counted_warned_and_kept_out_of_gradients():
    keras.config.set_dtype_policy("float64")
    layer = Equilibrium(
        _Scale(), tolerance=1e-10, max_iterations=40, engine="reference"
    )
    x = tf.constant([[0.5], [1e40], [-0.25]], "float64")
    with pytest.warns(UserWarning, match="1 of 3 examples did not converge"):
        solution = layer.fixed_point(x)
        output = layer(x)
    np.testing.assert_array_equal(solution.converged, [True, False, True])
    assert float(layer.unconverged_metric.result()) == 1
    np.testing.assert_allclose(np.asarray(solution.state)[[0, 2], 0], [2.0, 0.8])
    assert np.all(np.isfinite(solution.state))
    keep = tf.constant([[1.0], [0.0], [1.0]], "float64")
    with tf.GradientTape() as tape:
        tape.watch(x)
        with pytest.warns(UserWarning):
            output = layer(x)
        loss = tf.reduce_sum(tf.where(keep > 0, output, 0.0) * [[1.0], [0.0], [2.0]])
    dx, db = tape.gradient(loss, [x, layer.block.b])
    # z* = b / (1 - s): dz*/ds = b / (1 - s)^2, dz*/db = 1 / (1 - s).
    np.testing.assert_allclose(np.asarray(dx)[[0, 2], 0], [4.0, 2 * 0.64], rtol=1e-8)
    assert np.asarray(dx)[1, 0] == 0
    np.testing.assert_allclose(db, [2.0 + 2 * 0.8], rtol=1e-8)


# --- engines, saving, Keras conformance --------------------------------------


def test_xla_engine_equals_the_reference_engine():
    keras.config.set_dtype_policy("float64")
    layer, x = _problem(
        "gate", np.random.default_rng(12), solver="picard", tolerance=1e-10
    )
    reference = _gradients(layer, x) + [layer.fixed_point(x).iterations]
    compiled = Equilibrium.from_config({**layer.get_config(), "engine": "xla"})
    compiled.build(tuple(x.shape))
    compiled.set_weights(layer.get_weights())
    result = _gradients(compiled, x) + [compiled.fixed_point(x).iterations]
    np.testing.assert_array_equal(result[-1], reference[-1])
    for a, b in zip(result, reference):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_saving_round_trip_in_sequential(rng, tmp_path):
    block = keras.layers.Conv2D(
        3,
        3,
        padding="same",
        activation="tanh",
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.1),
    )
    model = keras.Sequential(
        [
            keras.Input((5, 5, 1)),
            Equilibrium(
                block,
                solver="picard",
                damping=0.8,
                gradient="phantom",
                max_iterations=40,
                engine="reference",
                name="deq",
            ),
        ]
    )
    x = rng.standard_normal((2, 5, 5, 1)).astype("float32")
    path = str(tmp_path / "deq.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    layer = loaded.get_layer("deq")
    assert (layer.solver, layer.damping, layer.gradient, layer.max_iterations) == (
        "picard",
        0.8,
        "phantom",
        40,
    )


class TestKerasConformance(LayerTestCase):
    def test_equilibrium(self):
        self.run_layer_test(
            Equilibrium,
            init_kwargs={
                "block": keras.layers.Dense(3, activation="tanh"),
                "feedback": "gate",
                "tolerance": 1e-2,
                "max_iterations": 8,
                "engine": "reference",
            },
            input_shape=(2, 3),
            expected_output_shape=(2, 3),
            expected_num_trainable_weights=4,
        )


# --- export ----------------------------------------------------------------------


def test_export_saved_model_in_a_fresh_process_and_litert(rng, tmp_path):
    inputs = keras.Input((5, 5, 1))
    block = keras.layers.Conv2D(
        3,
        3,
        padding="same",
        activation="tanh",
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.1),
    )
    h = Equilibrium(
        block, solver="anderson", tolerance=1e-6, max_iterations=60, name="deq"
    )(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    x = rng.standard_normal((3, 5, 5, 1)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    with pytest.warns(UserWarning, match="without the `step`"):
        path = keras_feedback.export.export_saved_model(model, tmp_path / "sm")
    script = textwrap.dedent(
        f"""
        import numpy as np, tensorflow as tf
        served = tf.saved_model.load({path!r}).signatures["serving_default"]
        x = np.load({str(tmp_path / "x.npy")!r})
        np.save({str(tmp_path / "y.npy")!r}, served(x=tf.constant(x))["y"].numpy())
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env)
    expected = np.asarray(model(x))
    saved_error = float(np.max(np.abs(np.load(tmp_path / "y.npy") - expected)))
    tflite = keras_feedback.export.export_litert(model, tmp_path / "deq.tflite")
    report = keras_feedback.export.verify_litert(model, tflite, x)
    print(
        f"Equilibrium SavedModel (fresh process) error {saved_error:.2e}, "
        f"LiteRT error {report['max_abs_error']:.2e}"
    )
    assert "WHILE" in report["ops"]
    assert all(op.isupper() and "FLEX" not in op for op in report["ops"])
    assert saved_error < 1e-5
    assert report["max_abs_error"] < 1e-5


# --- bad input -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"tolerance": 0}, ValueError, r"`tolerance` must be a positive float, got 0"),
        ({"tolerance": -1e-3}, ValueError, r"`tolerance` must be a positive float"),
        ({"max_iterations": 0}, ValueError, r"`max_iterations` must be a positive"),
        ({"max_iterations": 2.5}, ValueError, r"`max_iterations` must be a positive"),
        (
            {"solver": "newton"},
            ValueError,
            r"`solver` must be one of \('picard', 'anderson'\), got 'newton'",
        ),
        (
            {"gradient": "exact"},
            ValueError,
            r"`gradient` must be one of \('implicit', 'phantom', 'unrolled'\), "
            "got 'exact'",
        ),
        ({"damping": 1.5}, ValueError, r"`damping` must be a float in \(0, 1\]"),
        ({"jacobian_regularization": -1}, ValueError, r"must be a float >= 0"),
        ({"feedback": "multiply"}, ValueError, r"`feedback` must be one of"),
        ({"engine": "gpu"}, ValueError, r"`engine` must be one of"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        Equilibrium(keras.layers.Dense(2), **kwargs)


def test_block_must_be_a_layer():
    with pytest.raises(TypeError, match="`block` must be a Keras layer"):
        Equilibrium(lambda x: x)


def test_output_that_cannot_be_fed_back():
    layer = Equilibrium(keras.layers.Dense(3), feedback="add")
    with pytest.raises(
        ValueError,
        match=r"Equilibrium\(feedback='add'\) cannot feed back .* input shape "
        r"\(None, 5\) and fed-back shape \(None, 3\). Pass `projection`",
    ):
        layer(keras.Input((5,)))
