"""The layouts of the fused engine's per-step products.

A per-step product with a large kernel runs feature-major (the batch as the
minor axis), which XLA:CPU runs faster; optimization barriers keep the
layouts XLA would otherwise fold away. In the backward pass, a "linked"
product hands the step a kept forward product and routes its gradient to
the step's states without recomputing the matmul.
"""

import tensorflow as tf
from tensorflow.compiler.tf2xla.ops import gen_xla_ops

from keras_feedback.engine import _xla_config as config

# Per-step products with kernels of at least this many weights run
# feature-major (``feature_major_matmul``); below it the transposes cost
# about what they save (docs/engine.md, "Measurements behind the code", M4).
FEATURE_MAJOR_MIN_WEIGHTS = 512 * 1024


def barrier(x):
    """``x``, which XLA may not fold into its neighbours (a layout kept)."""
    return gen_xla_ops.xla_optimization_barrier([x])[0]


def feature_major(kernel):
    """Whether a per-step product with ``kernel`` runs feature-major."""
    size = kernel.shape.num_elements()
    return size is not None and size >= FEATURE_MAJOR_MIN_WEIGHTS


def feature_major_matmul(matrix, a):
    """``a @ matrix^T`` for ``(B, n)`` ``a``, as ``(matrix @ a^T)^T``.

    XLA:CPU runs a ``(m, n) x (n, B)`` product with the batch as the minor
    axis faster than the ``(B, n) x (n, m)`` one (docs/engine.md, M5); left
    to itself it folds the transposes into the product and picks the slower
    form, so barriers keep them.
    """
    a_t = barrier(tf.transpose(a))
    return tf.transpose(barrier(tf.matmul(matrix, a_t)))


def forward_matrices(linears, leaves):
    """The transposed kernel of each feature-major product (by leaf index),
    made once before the forward loop."""
    return {
        linear.index: barrier(tf.transpose(leaves[linear.index]))
        for linear in linears
        if feature_major(leaves[linear.index])
    }


def product(linear, operand, leaves, transposed):
    """``operand @ kernel`` of one deferred linear in the forward loop
    (feature-major when ``transposed``, from ``forward_matrices``, holds
    its kernel)."""
    if linear.index in transposed:
        return feature_major_matmul(transposed[linear.index], operand)
    return tf.matmul(operand, leaves[linear.index])


def backward_matrices(cfg, params):
    """For each deferred linear (by leaf index), the matrix the backward
    pass multiplies a product's gradient with, made once before its loop:
    the kernel itself for a feature-major product, else its transpose, kept
    from being folded back into the product (``(B, G) x (G, in)`` runs
    faster than ``(B, G) x (in, G)^T``: docs/engine.md, M6)."""
    if not cfg.keep_sums:
        return {}
    leaves = tf.nest.flatten(params)
    matrices = {}
    for linear in config.deferred(cfg, params):
        kernel = leaves[linear.index]
        matrices[linear.index] = (
            kernel if feature_major(kernel) else barrier(tf.transpose(kernel))
        )
    return matrices


def linked_product(x, value, matrix):
    """``value`` (the kept ``x @ kernel``, or zeros when the step's input
    already holds it) with the gradient of ``x @ kernel`` for ``x`` (made
    with ``matrix``, from ``backward_matrices``); the upstream gradient
    itself for ``value``."""
    if feature_major(matrix):
        return _linked_feature_major(x, value, matrix)
    return _linked_batch_major(x, value, matrix)


@tf.custom_gradient
def _linked_batch_major(x, value, kernel_t):
    def grad(upstream):
        return tf.matmul(upstream, kernel_t), upstream, tf.zeros_like(kernel_t)

    return tf.identity(value), grad


@tf.custom_gradient
def _linked_feature_major(x, value, kernel):
    def grad(upstream):
        d_x = feature_major_matmul(kernel, upstream)
        return d_x, upstream, tf.zeros_like(kernel)

    return tf.identity(value), grad
