"""``Equilibrium``: a block fed back to its fixed point, with implicit gradients.

A deep equilibrium model (Bai et al., 2019): instead of ``FeedbackLoop``'s
fixed number of iterations, the fed-back signal ``z`` is iterated to the
fixed point ``z* = f(z*, x)`` of the block, and the gradient is that of the
fixed point itself. The solvers are in ``_equilibrium_solvers``; the math
and the choice of gradient are in ``docs/equilibrium.md``.
"""

import dataclasses
import functools
import math
import numbers
import warnings

import keras
import tensorflow as tf

from keras_feedback import engine as engines
from keras_feedback._api import public
from keras_feedback.layers import _equilibrium_solvers as solvers
from keras_feedback.layers._batch import batch_checked
from keras_feedback.layers._feedback_loop import BlockFeedback

GRADIENTS = ("implicit", "phantom", "unrolled")


def _positive_int(value, argument):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"Argument `{argument}` must be a positive integer, got {value!r}"
        )
    return value


def _number(value, argument, low, high, low_open, expected):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (value > low if low_open else value >= low)
        ok = ok and value <= high
    if not ok:
        raise ValueError(f"Argument `{argument}` must be {expected}, got {value!r}")
    return value


def _rows(mask, like):
    return tf.reshape(mask, [-1] + [1] * (like.shape.rank - 1))


def _zero_where_not(mask, tensor):
    """``tensor`` with the examples outside ``mask`` zeroed (NaN-safe)."""
    return tf.where(_rows(mask, tensor), tensor, tf.zeros_like(tensor))


@public("keras_feedback.layers.Equilibrium")
class Equilibrium(BlockFeedback):
    """Feeds a block's output back until it settles: a deep equilibrium layer.

    ``block`` (any Keras layer or model) is fed back as in ``FeedbackLoop``
    (same ``feedback`` modes, ``feedback_from`` and ``projection``), but
    instead of a fixed number of iterations the fed-back signal ``z`` is
    iterated to the fixed point ``z* = f(z*, x)``, where ``f(z, x)`` is the
    fed-back signal the block produces on the input combined with ``z``.
    ``z`` starts from zeros (or ``initial_state``); the solver stops when the
    relative residual ``||f(z, x) - z|| / ||z||`` of every example is below
    ``tolerance``, or after ``max_iterations`` evaluations of the block. The
    layer returns the block's output at ``z*``.

    ``gradient`` says how the fixed point is differentiated:

    - ``"implicit"``: by the implicit function theorem. The backward pass
      solves the adjoint fixed point ``g = J^T g + dL/dz*`` (``J = df/dz`` at
      ``z*``) with the same solver, by vector-Jacobian products only; memory
      does not grow with the iterations.
    - ``"phantom"``: ``phantom_steps`` damped steps of that iteration from
      zero (Geng et al., 2021): cheaper, approximate; see
      ``docs/equilibrium.md`` for its error bound.
    - ``"unrolled"``: backpropagation through the solver's iterations (memory
      grows with them), for comparison.

    The solver loop is a ``tf.while_loop`` of builtin ops, compiled with XLA
    (``engine="xla"``, the default ``"auto"``) or run as is
    (``"reference"``, which is what export traces): it exports to SavedModel
    and to LiteRT as one builtin WHILE op with the convergence test. The
    block is called as a pure function of its weights inside the loop.

    Each call reports the mean number of block evaluations per example
    (``<name>_iterations``), the mean final residual
    (``<name>_residual``) and the number of examples that did not converge
    (``<name>_unconverged``) as metrics, which ``fit`` logs. An example that
    did not converge returns the block's output at its last iterate (its
    last finite one, if the iteration diverged) and is counted, and an
    eager call warns about it; its gradient through the fixed point is the
    one at that iterate where the adjoint solve converges there, and none
    if its iteration diverged.

    Args:
        block: a Keras layer or model.
        feedback: ``"concat"``, ``"add"`` or ``"gate"`` (see
            ``FeedbackLoop``).
        solver: ``"anderson"`` (Anderson acceleration, ``anderson_memory``
            past points) or ``"picard"`` (plain iteration, ``damping``).
        max_iterations: positive int, the most block evaluations of a solve.
        tolerance: positive float, the relative residual to reach.
        gradient: ``"implicit"``, ``"phantom"`` or ``"unrolled"``.
        jacobian_regularization: float >= 0, ``λ``: adds ``λ ||J||_F^2``
            (per example, averaged over the batch; a Hutchinson estimate with
            one Rademacher probe at ``z*``) to the layer's losses in training.
        feedback_from: optional name of a layer of ``block`` whose output is
            fed back (see ``FeedbackLoop``).
        projection: optional Keras layer applied to the fed-back signal.
        damping: float in (0, 1], ``β``: Picard steps ``z <- z + β (f(z) -
            z)``; Anderson's mixing of the images and the points.
        anderson_memory: positive int, the points Anderson mixes.
        backward_max_iterations: the adjoint solve's ``max_iterations``
            (default: ``max_iterations``).
        backward_tolerance: the adjoint solve's ``tolerance`` (default:
            ``tolerance``).
        phantom_steps: positive int, the steps of the phantom gradient.
        phantom_damping: float in (0, 1], their damping ``λ``.
        engine: ``"auto"``, ``"xla"`` or ``"reference"``: whether the solver
            loops (forward and adjoint) are compiled with XLA; a
            ``keras_feedback.engine.scope`` overrides it.
        **kwargs: base Layer arguments.

    Call arguments:
        inputs: a tensor, ``(batch, ..., channels)``.
        initial_state: optional starting point ``z``, shaped like the
            fed-back signal.
        training: bool, passed to the block; the Jacobian penalty is added
            in training only.

    Returns:
        The block's output at the fixed point. ``fixed_point`` returns the
        fixed point itself with the iterations and residuals per example.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_feedback
    >>> block = keras.layers.Dense(
    ...     4, activation="tanh", kernel_initializer=keras.initializers.Orthogonal(0.5))
    >>> layer = keras_feedback.layers.Equilibrium(
    ...     block, feedback="add", tolerance=1e-5, engine="reference")
    >>> x = np.ones((2, 4), "float32")
    >>> solution = layer.fixed_point(x)
    >>> bool(np.all(solution.residual < 1e-5)), layer(x).shape
    (True, TensorShape([2, 4]))

    Reference:
        Bai, Kolter and Koltun, "Deep Equilibrium Models", NeurIPS 2019.
        Bai, Koltun and Kolter, "Stabilizing Equilibrium Models by Jacobian
        Regularization", ICML 2021. Geng et al., "On Training Implicit Models",
        NeurIPS 2021.
    """

    def __init__(
        self,
        block: keras.layers.Layer,
        feedback: str = "concat",
        solver: str = "anderson",
        max_iterations: int = 30,
        tolerance: float = 1e-4,
        gradient: str = "implicit",
        jacobian_regularization: float = 0.0,
        feedback_from: str | None = None,
        projection: keras.layers.Layer | None = None,
        damping: float = 1.0,
        anderson_memory: int = 5,
        backward_max_iterations: int | None = None,
        backward_tolerance: float | None = None,
        phantom_steps: int = 5,
        phantom_damping: float = 0.5,
        engine: str = "auto",
        **kwargs,
    ):
        if solver not in solvers.SOLVERS:
            raise ValueError(
                f"Argument `solver` must be one of {solvers.SOLVERS}, got {solver!r}"
            )
        if gradient not in GRADIENTS:
            raise ValueError(
                f"Argument `gradient` must be one of {GRADIENTS}, got {gradient!r}"
            )
        _positive_int(max_iterations, "max_iterations")
        positive = "a positive float"
        tolerance = _number(tolerance, "tolerance", 0, math.inf, True, positive)
        jacobian_regularization = _number(
            jacobian_regularization,
            "jacobian_regularization",
            0,
            math.inf,
            False,
            "a float >= 0",
        )
        fraction = "a float in (0, 1]"
        damping = _number(damping, "damping", 0, 1, True, fraction)
        _positive_int(anderson_memory, "anderson_memory")
        if backward_max_iterations is not None:
            _positive_int(backward_max_iterations, "backward_max_iterations")
        if backward_tolerance is not None:
            backward_tolerance = _number(
                backward_tolerance, "backward_tolerance", 0, math.inf, True, positive
            )
        _positive_int(phantom_steps, "phantom_steps")
        phantom_damping = _number(
            phantom_damping, "phantom_damping", 0, 1, True, fraction
        )
        engines.check_name(engine)
        super().__init__(
            block,
            feedback=feedback,
            feedback_from=feedback_from,
            projection=projection,
            **kwargs,
        )
        self.solver = solver
        self.max_iterations = max_iterations
        self.tolerance = tolerance
        self.gradient = gradient
        self.jacobian_regularization = jacobian_regularization
        self.damping = damping
        self.anderson_memory = anderson_memory
        self.backward_max_iterations = backward_max_iterations
        self.backward_tolerance = backward_tolerance
        self.phantom_steps = phantom_steps
        self.phantom_damping = phantom_damping
        self.engine = engine
        # Weights are read at their own precision and handed to the block,
        # whose layers cast them as they do (mixed precision).
        self.autocast = False
        self.iterations_metric = keras.metrics.Mean(name=f"{self.name}_iterations")
        self.residual_metric = keras.metrics.Mean(name=f"{self.name}_residual")
        self.unconverged_metric = keras.metrics.Sum(name=f"{self.name}_unconverged")
        self.probe_seed = (
            keras.random.SeedGenerator(name="probe_seed")
            if jacobian_regularization
            else None
        )
        object.__setattr__(self, "_compiled", {})

    # --- the map f and its solves ---------------------------------------------

    @property
    def forward_settings(self):
        return solvers.Settings(
            solver=self.solver,
            max_iterations=self.max_iterations,
            tolerance=self.tolerance,
            damping=self.damping,
            memory=self.anderson_memory,
        )

    @property
    def backward_settings(self):
        return dataclasses.replace(
            self.forward_settings,
            max_iterations=self.backward_max_iterations or self.max_iterations,
            tolerance=self.backward_tolerance or self.tolerance,
        )

    def _state(self):
        """The variables the block call reads: (differentiated, constant)."""
        return list(self.trainable_weights), list(self.non_trainable_weights)

    def _map(self, x, z, values, constants, training):
        """``f(z, x)``: the fed-back signal, a pure function of the weights."""
        trainable, fixed = self._state()
        mapping = list(zip(trainable, values)) + list(zip(fixed, constants))
        with keras.StatelessScope(state_mapping=mapping):
            _, fed = self._run_block(self._combine(x, z), training)
        return tf.cast(fed, z.dtype)

    def _forward(self, training, x, z0, values, constants):
        return solvers.solve(
            self.forward_settings,
            lambda z: self._map(x, z, values, constants, training),
            z0,
        )

    def _vjp(self, x, z, values, constants, training, cotangent, wrt):
        with tf.GradientTape() as tape:
            tape.watch(wrt)
            fz = self._map(x, z, values, constants, training)
        return tape.gradient(
            fz,
            wrt,
            output_gradients=tf.cast(cotangent, fz.dtype),
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )

    def _backward(self, training, x, z, values, constants, upstream, finite):
        """The gradients of ``z*`` w.r.t. ``x`` and ``values`` given
        ``dL/dz*``: solve (or approximate) the adjoint, then one VJP.

        Examples whose iteration stopped being finite (``finite`` false)
        get none, and so does any whose adjoint solve does not converge (or
        whose phantom adjoint is not finite): a diverging example adds no
        NaN, and no overflow, to the weights' gradients.
        """
        z = _zero_where_not(finite, z)
        u = _zero_where_not(finite, tf.cast(upstream, z.dtype))

        def transposed(g):
            return self._vjp(x, z, values, constants, training, g, z)

        if self.gradient == "implicit":
            adjoint = solvers.solve(
                self.backward_settings, lambda g: transposed(g) + u, u
            )
            g, solved = adjoint.state, adjoint.converged
        else:
            g = tf.zeros_like(u)
            beta = self.phantom_damping
            for _ in range(self.phantom_steps):
                g = (1.0 - beta) * g + beta * (transposed(g) + u)
            flat = tf.reshape(g, [tf.shape(g)[0], -1])
            solved = tf.reduce_all(tf.math.is_finite(flat), axis=-1)
        g = _zero_where_not(tf.logical_and(finite, solved), g)
        grads = self._vjp(x, z, values, constants, training, g, [x] + list(values))
        return grads[0], grads[1:]

    def _function(self, kind, training):
        """The solve ``kind`` (``"forward"``/``"backward"``), compiled by the
        engine in effect."""
        fn = getattr(self, "_" + kind)
        fn = functools.partial(fn, bool(training))
        if engines.resolve(self.engine) != "xla":
            return fn
        key = (kind, bool(training))
        if key not in self._compiled:
            self._compiled[key] = tf.function(
                fn, jit_compile=True, reduce_retracing=True, autograph=False
            )
        return self._compiled[key]

    def _attach(self, solution, x, values, constants, training):
        """``z*`` with its implicit (or phantom) gradient."""
        finite = tf.math.is_finite(solution.residual)
        backward = self._function("backward", training)

        @tf.custom_gradient
        def attached(z, x, *values):
            def grad(upstream, variables=None):
                dx, dvalues = backward(x, z, list(values), constants, upstream, finite)
                grads = [None, tf.cast(dx, x.dtype), *dvalues]
                if variables:
                    return grads, [None] * len(variables)
                return grads

            return tf.identity(z), grad

        return attached(tf.stop_gradient(solution.state), x, *values)

    def _initial_state(self, x, initial_state):
        if initial_state is not None:
            z0 = tf.cast(tf.convert_to_tensor(initial_state), x.dtype)
            expected = (None,) + tuple(self._fed_shape[1:])
            if z0.shape.rank != len(expected) or not all(
                e is None or d is None or e == d
                for e, d in zip(expected, tuple(z0.shape))
            ):
                raise ValueError(
                    "Argument `initial_state` must have the shape of the "
                    f"fed-back signal {expected}, got {tuple(z0.shape)}"
                )
            return batch_checked(
                "Argument `initial_state`", z0, x, check=not engines.pure()
            )
        if self.feedback == "concat":
            shape = tf.concat([tf.shape(x)[:-1], [self._fed_shape[-1]]], 0)
            return tf.zeros(shape, x.dtype)
        return tf.zeros_like(x)

    def fixed_point(self, inputs, initial_state=None, training=False):
        """Solves for the fixed point of ``inputs``.

        Args:
            inputs: a tensor, ``(batch, ..., channels)``.
            initial_state: optional starting point (see ``call``).
            training: bool, passed to the block.

        Returns:
            A ``Solution`` named tuple: ``state`` (``z*``, differentiable
            as ``gradient`` says), ``iterations`` (int32, block evaluations
            per example), ``residual`` (the relative residual of each
            example's ``state``; inf where the iteration stopped being
            finite) and ``converged`` (bool, ``residual < tolerance``).
        """
        x = tf.cast(tf.convert_to_tensor(inputs), self.compute_dtype)
        if not self.built:
            self.build(tuple(x.shape))
        z0 = self._initial_state(x, initial_state)
        trainable, fixed = self._state()
        values = [tf.convert_to_tensor(v.value) for v in trainable]
        constants = [tf.convert_to_tensor(v.value) for v in fixed]
        if self.gradient == "unrolled":
            # Differentiated by TensorFlow through the loop: never compiled
            # on its own (a compiled loop's autodiff cannot leave XLA).
            return self._forward(bool(training), x, z0, values, constants)
        forward = self._function("forward", training)
        solution = forward(
            tf.stop_gradient(x),
            tf.stop_gradient(z0),
            [tf.stop_gradient(v) for v in values],
            constants,
        )
        if engines.pure():  # an exported graph: no gradient needed
            return solution
        state = self._attach(solution, x, values, constants, training)
        return solution._replace(state=state)

    # --- the layer ---------------------------------------------------------------

    def call(self, inputs, initial_state=None, training=None):
        x = tf.cast(tf.convert_to_tensor(inputs), self.compute_dtype)
        solution = self.fixed_point(x, initial_state, training=training)
        output, _ = self._run_block(self._combine(x, solution.state), training)
        if training and self.jacobian_regularization:
            self.add_loss(self._jacobian_penalty(x, solution, training))
        if not engines.pure():
            self._report(solution)
        return output

    def _jacobian_penalty(self, x, solution, training):
        """``λ ||J||_F^2`` by Hutchinson's estimate, one Rademacher probe."""
        finite = tf.math.is_finite(solution.residual)
        z = tf.stop_gradient(_zero_where_not(finite, solution.state))
        probe = keras.random.randint(tf.shape(z), 0, 2, seed=self.probe_seed)
        probe = tf.cast(2 * probe - 1, z.dtype)
        with tf.GradientTape() as tape:
            tape.watch(z)
            _, fz = self._run_block(self._combine(x, z), training)
        product = tape.gradient(fz, z, output_gradients=tf.cast(probe, fz.dtype))
        dtype = tf.float64 if z.dtype == tf.float64 else tf.float32
        flat = tf.reshape(tf.cast(product, dtype), [tf.shape(z)[0], -1])
        squares = tf.reduce_sum(tf.square(flat), axis=-1)
        finite = tf.logical_and(finite, tf.math.is_finite(squares))
        squares = tf.where(finite, squares, tf.zeros_like(squares))
        return self.jacobian_regularization * tf.reduce_mean(squares)

    def _report(self, solution):
        converged = solution.converged
        finite = tf.math.is_finite(solution.residual)
        self.iterations_metric.update_state(tf.cast(solution.iterations, "float32"))
        self.residual_metric.update_state(
            tf.where(finite, solution.residual, tf.zeros_like(solution.residual)),
            sample_weight=tf.cast(finite, solution.residual.dtype),
        )
        unconverged = tf.reduce_sum(tf.cast(tf.logical_not(converged), "float32"))
        self.unconverged_metric.update_state(unconverged)
        if tf.executing_eagerly() and float(unconverged) > 0:
            worst = float(tf.reduce_max(solution.residual))
            warnings.warn(
                f"Equilibrium {self.name!r}: {int(unconverged)} of "
                f"{int(tf.size(converged))} examples did not converge to "
                f"tolerance={self.tolerance} within max_iterations="
                f"{self.max_iterations} (worst relative residual {worst:.3g}); "
                "their outputs are those at the last (finite) iterate",
                stacklevel=2,
            )

    def compute_output_spec(self, inputs, initial_state=None, training=None):
        return self._block_spec(tuple(inputs.shape))

    # --- serialization -------------------------------------------------------------

    def get_config(self):
        config = {
            "solver": self.solver,
            "max_iterations": self.max_iterations,
            "tolerance": self.tolerance,
            "gradient": self.gradient,
            "jacobian_regularization": self.jacobian_regularization,
            "damping": self.damping,
            "anderson_memory": self.anderson_memory,
            "backward_max_iterations": self.backward_max_iterations,
            "backward_tolerance": self.backward_tolerance,
            "phantom_steps": self.phantom_steps,
            "phantom_damping": self.phantom_damping,
            "engine": self.engine,
        }
        return {**super().get_config(), **config}
