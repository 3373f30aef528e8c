"""Fixed-point solvers of ``Equilibrium``: pure functions of a map and a start.

``solve(settings, fn, z0)`` iterates ``z <- fn(z)`` (Picard, optionally
damped) or its Anderson acceleration until the relative residual
``||fn(z) - z|| / ||z||`` of every example (axis 0 is the batch) is below
the tolerance, or for ``max_iterations`` evaluations of ``fn``. The loop is
one ``tf.while_loop`` of builtin ops (no TensorArray, no linear-algebra
kernel: Anderson's small least-squares systems are solved by an unrolled
Cholesky factorisation), so it compiles with XLA and converts to LiteRT's
builtin WHILE. Examples are independent: one that converged keeps its
point, one whose map stops being finite keeps its last finite point and is
reported as not converged.

The same ``solve`` runs the adjoint fixed point ``g = J^T g + u`` of the
implicit gradient, with ``fn`` a vector-Jacobian product.
"""

import dataclasses
from typing import NamedTuple

import tensorflow as tf

SOLVERS = ("picard", "anderson")

# Added to ||z|| in the relative residual: a fixed point at zero converges.
RESIDUAL_EPSILON = 1e-12


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a solve does (static: part of a compiled function's identity)."""

    solver: str = "anderson"
    max_iterations: int = 30
    tolerance: float = 1e-4
    damping: float = 1.0  # z <- (1 - damping) z + damping f(z) (Anderson: mixing)
    memory: int = 5  # Anderson's history
    regularization: float = 1e-4  # Anderson: relative ridge of its systems


class Solution(NamedTuple):
    """The result of ``solve``; every field has the batch on axis 0."""

    state: tf.Tensor  # the last point whose residual is known
    iterations: tf.Tensor  # int32: evaluations of fn until it converged
    residual: tf.Tensor  # the relative residual of ``state`` (inf: not finite)
    converged: tf.Tensor  # bool: residual < tolerance


class _Carry(NamedTuple):
    k: tf.Tensor
    z: tf.Tensor
    active: tf.Tensor
    iterations: tf.Tensor
    residual: tf.Tensor
    points: tf.Tensor  # Anderson: the last ``memory`` points, (B, m, d)
    images: tf.Tensor  # Anderson: fn of each of them


def _flat(z):
    return tf.reshape(z, [tf.shape(z)[0], -1])


def _math_dtype(dtype):
    return tf.float64 if dtype == tf.float64 else tf.float32


def _norm(flat):
    return tf.sqrt(tf.reduce_sum(tf.square(flat), axis=-1))


def relative_residual(fz, z):
    """``||fz - z|| / (||z|| + eps)`` per example, in float32 (or float64)."""
    dtype = _math_dtype(z.dtype)
    fz = tf.cast(_flat(fz), dtype)
    z = tf.cast(_flat(z), dtype)
    return _norm(fz - z) / (_norm(z) + RESIDUAL_EPSILON)


def _tiny(dtype):
    return tf.constant(1e-300 if dtype == tf.float64 else 1e-30, dtype)


def _inf(dtype):
    return tf.constant(float("inf"), dtype)


def _finite(flat):
    return tf.reduce_all(tf.math.is_finite(flat), axis=-1)


def _rows(mask, like):
    """A per-example mask broadcast against ``like``."""
    return tf.reshape(mask, [-1] + [1] * (like.shape.rank - 1))


def cholesky_solve(h, b):
    """Solves ``h u = b`` for a batch of small SPD matrices, unrolled.

    Args:
        h: ``(B, m, m)`` symmetric positive definite, ``m`` static.
        b: ``(m,)`` right-hand side shared by the batch.

    Returns:
        ``u``, ``(B, m)``. Elementwise ops only (no linear-algebra kernel:
        LiteRT has none), ``m^3 / 6`` of them on ``(B,)`` vectors.
    """
    m = h.shape[-1]
    entries = [tf.unstack(row, axis=-1) for row in tf.unstack(h, axis=1)]
    tiny = _tiny(h.dtype)
    low = [[None] * m for _ in range(m)]
    for j in range(m):
        pivot = entries[j][j] - sum(low[j][k] * low[j][k] for k in range(j))
        low[j][j] = tf.sqrt(tf.maximum(pivot, tiny))
        for i in range(j + 1, m):
            off = entries[i][j] - sum(low[i][k] * low[j][k] for k in range(j))
            low[i][j] = off / low[j][j]
    y = []
    for i in range(m):
        y.append((b[i] - sum(low[i][k] * y[k] for k in range(i))) / low[i][i])
    u = [None] * m
    for i in reversed(range(m)):
        u[i] = (y[i] - sum(low[k][i] * u[k] for k in range(i + 1, m))) / low[i][i]
    return tf.stack(u, axis=-1)


def _anderson(settings, k, points, images):
    """The next point from the history: ``(B, d)``.

    Minimises ``||sum_i a_i (f(z_i) - z_i)||`` over ``sum_i a_i = 1`` (the
    normal equations, ridge-regularised relative to their scale), then mixes
    ``damping * sum a_i f(z_i) + (1 - damping) * sum a_i z_i``. Slots not yet
    filled (the first ``memory - 1`` iterations) get ``a_i = 0``.
    """
    m = settings.memory
    dtype = points.dtype
    residuals = images - points
    gram = tf.matmul(residuals, residuals, transpose_b=True)
    filled = tf.range(m) >= m - tf.minimum(k + 1, m)
    both = tf.logical_and(filled[:, None], filled[None, :])
    gram = tf.where(both[None], gram, tf.zeros_like(gram))
    count = tf.cast(tf.minimum(k + 1, m), dtype)
    # Scaled to a unit mean diagonal (the slots not yet filled hold zeros:
    # the sum of squares is the trace), so the ridge is relative and the
    # factorisation sees entries of order one however small the residuals.
    scale = tf.reduce_sum(tf.square(residuals), axis=[1, 2]) / count
    gram = gram / (scale[:, None, None] + _tiny(dtype))
    ridge = tf.where(
        filled, tf.constant(settings.regularization, dtype), tf.constant(1.0, dtype)
    )
    gram = gram + ridge[:, None] * tf.eye(m, dtype=dtype)
    u = cholesky_solve(gram, tf.cast(filled, dtype))
    alpha = u / tf.reduce_sum(u, axis=-1, keepdims=True)
    alpha = alpha[:, :, None]
    mixed_images = tf.reduce_sum(alpha * images, axis=1)
    if settings.damping == 1.0:
        return mixed_images
    mixed_points = tf.reduce_sum(alpha * points, axis=1)
    return settings.damping * mixed_images + (1.0 - settings.damping) * mixed_points


def _step(settings, fn, carry):
    """One evaluation of ``fn`` and, for the examples still running, an update."""
    z = carry.z
    fz = tf.cast(fn(z), z.dtype)
    dtype = _math_dtype(z.dtype)
    flat_z = tf.cast(_flat(z), dtype)
    flat_fz = tf.cast(_flat(fz), dtype)
    residual = _norm(flat_fz - flat_z) / (_norm(flat_z) + RESIDUAL_EPSILON)
    finite = tf.logical_and(_finite(flat_fz), tf.math.is_finite(residual))
    residual = tf.where(finite, residual, tf.fill(tf.shape(residual), _inf(dtype)))
    k = carry.k + 1
    iterations = tf.where(carry.active, k, carry.iterations)
    residual = tf.where(carry.active, residual, carry.residual)
    running = carry.active & finite & (residual >= settings.tolerance)
    points, images = carry.points, carry.images
    if settings.solver == "anderson":
        points = tf.concat([points[:, 1:], flat_z[:, None]], axis=1)
        images = tf.concat([images[:, 1:], flat_fz[:, None]], axis=1)
        flat_next = _anderson(settings, carry.k, points, images)
        following = tf.reshape(tf.cast(flat_next, z.dtype), tf.shape(z))
    elif settings.damping == 1.0:
        following = fz
    else:
        following = z + settings.damping * (fz - z)
    running = running & _finite(tf.cast(_flat(following), dtype))
    # The last evaluation's update is not taken: the point returned is one
    # whose residual is known.
    update = running & (k < settings.max_iterations)
    z = tf.where(_rows(update, z), following, z)
    return _Carry(k, z, running, iterations, residual, points, images)


def solve(settings, fn, z0, maximum_iterations=True):
    """Iterates ``fn`` from ``z0`` to its fixed point; a ``Solution``.

    Args:
        settings: a ``Settings``.
        fn: ``z -> f(z)``, same shape and dtype, acting on each example
            (axis 0) independently.
        z0: the starting point ``(B, ...)``.
        maximum_iterations: pass the iteration bound to ``tf.while_loop``
            (needed to differentiate the loop under XLA).

    Returns:
        A ``Solution``.
    """
    z0 = tf.convert_to_tensor(z0)
    batch = tf.shape(z0)[0]
    dtype = _math_dtype(z0.dtype)
    m = settings.memory if settings.solver == "anderson" else 0
    width = tf.reduce_prod(tf.shape(z0)[1:])
    history = tf.zeros(tf.stack([batch, m, width]), dtype)
    carry = _Carry(
        k=tf.constant(0, tf.int32),
        z=z0,
        active=tf.ones([batch], tf.bool),
        iterations=tf.zeros([batch], tf.int32),
        residual=tf.fill([batch], _inf(dtype)),
        points=history,
        images=history,
    )

    def condition(carry):
        return tf.logical_and(
            carry.k < settings.max_iterations, tf.reduce_any(carry.active)
        )

    def body(carry):
        return [_step(settings, fn, carry)]

    invariants = _Carry(
        k=tf.TensorShape([]),
        z=z0.shape,
        active=tf.TensorShape([None]),
        iterations=tf.TensorShape([None]),
        residual=tf.TensorShape([None]),
        points=tf.TensorShape([None, m, None]),
        images=tf.TensorShape([None, m, None]),
    )
    final = tf.while_loop(
        condition,
        body,
        [carry],
        shape_invariants=[invariants],
        maximum_iterations=settings.max_iterations if maximum_iterations else None,
    )[0]
    return Solution(
        state=final.z,
        iterations=final.iterations,
        residual=final.residual,
        converged=final.residual < settings.tolerance,
    )
