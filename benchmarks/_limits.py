"""The machine's own limits, measured in the same run as the models.

- ``machine_limits``: the matmul rate of TensorFlow's kernel (oneDNN on x86)
  and XLA's, fp32 and bf16, large (2048^2) and at a recurrent step's shape.
- ``loop_limits``: a bare loop of a recurrence's own per-step matmuls, for
  inference (``h <- fold(h @ U)``) and for training (that loop, then the
  reverse loop ``dh <- unfold(dh) @ U^T`` and the kernel's gradient as one
  matmul after it), through either kernel, as one loop or as one loop per
  core side by side on parts of the batch (as the fused engine runs its
  shards): the best of the four. Any exact step-by-step implementation does
  at least this work, in sequence: it is the ceiling of what a recurrence
  can reach on this machine (the input projection and the step's
  elementwise work left out, which only lower it).
"""

import os
import platform
import time

import keras
import tensorflow as tf


def machine():
    """The machine and software a run measured: CPU model, logical CPUs,
    TensorFlow, Keras and Python versions (the ``Machine: ...`` line)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [
                line.split(":", 1)[1].strip() for line in f if "model name" in line
            ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, TensorFlow {tf.__version__}, "
        f"Keras {keras.__version__}, Python {platform.python_version()}"
    )


def timed(fn, repeats, min_seconds):
    """Best time of one call: one timed call, then ``repeats`` windows of
    ``min_seconds`` (after a warm-up); a call slower than 2 s (Keras's layers under mixed_float16 on CPUs) is
    timed once."""
    fn()
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    if once > 2.0:
        return once
    return min([once] + [window(fn, min_seconds) for _ in range(repeats)])


def window(fn, min_seconds):
    """Mean time of one call over a window of at least ``min_seconds``."""
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / calls


def matmul_gflops(size=2048, repeats=5, dtype="float32", jit_compile=False, m=None):
    """GFLOP/s of an ``(m, size) x (size, size)`` matmul (``m`` default
    ``size``) in ``dtype``, through TensorFlow's kernel (oneDNN on x86) or
    XLA's (``jit_compile``)."""
    m = size if m is None else m
    a = tf.cast(tf.random.normal([m, size]), dtype)
    b = tf.cast(tf.random.normal([size, size]), dtype)
    matmul = tf.function(lambda: tf.matmul(a, b), jit_compile=jit_compile)
    seconds = timed(lambda: matmul().numpy(), repeats, 0.2)
    return 2 * m * size**2 / seconds / 1e9


def step_shape_gflops(batch, units, dtype, jit_compile, repeats=5):
    """GFLOP/s of one ``(batch, units) x (units, 4 units)`` matmul."""
    a = tf.cast(tf.random.normal([batch, units]), dtype)
    b = tf.cast(tf.random.normal([units, 4 * units]), dtype)
    matmul = tf.function(lambda: tf.matmul(a, b), jit_compile=jit_compile)
    seconds = timed(lambda: matmul().numpy(), repeats, 0.2)
    return 2 * batch * units * 4 * units / seconds / 1e9


def machine_limits(args):
    """The machine's matmul rates, measured in this run: fp32 and bf16,
    TensorFlow's kernel and XLA's, large (2048^2) and at a recurrent step's
    shape (batch x H by H x 4H, H the largest size benchmarked)."""
    size = 256 if args.quick else 2048
    units = max(args.units)
    rows = []
    for dtype in ("float32", "bfloat16"):
        for jit in (False, True):
            rows.append(
                dict(
                    dtype=dtype,
                    kernel="XLA" if jit else "TensorFlow",
                    large=matmul_gflops(size, dtype=dtype, jit_compile=jit),
                    step=step_shape_gflops(args.batch, units, dtype, jit),
                )
            )
    return rows


def _fold(z, rows, gates, units):
    # The gates' blocks summed back to (rows, units): every column of the
    # product is used (a slice of it would let XLA compute only that part).
    return tf.reduce_sum(tf.reshape(z, [rows, gates, units]), 1)


def bare_loop(rows, units, gates, time_steps, dtype, training):
    """The loop of one shard, ``(h0, dh) -> ...``: inference
    ``h <- fold(h @ U)`` over ``time_steps``; training, also the reverse
    loop of its gradient and the kernel's gradient (one matmul)."""
    kernel = tf.cast(tf.random.normal([units, gates * units]) / units**0.5, dtype)
    kernel_t = tf.transpose(kernel)

    def forward(h):
        def body(t, h, hs):
            return (
                t + 1,
                _fold(tf.matmul(h, kernel), rows, gates, units),
                hs.write(t, h),
            )

        hs = tf.TensorArray(dtype, size=time_steps, element_shape=[rows, units])
        return tf.while_loop(lambda t, *_: t < time_steps, body, (0, h, hs))[1:]

    def inference(h, dh):
        return forward(h)[0]

    def train(h, dh):
        h, hs = forward(h)

        def body(t, dh, dzs):
            dz = tf.tile(dh, [1, gates])
            return t - 1, tf.matmul(dz, kernel_t), dzs.write(t, dz)

        dzs = tf.TensorArray(
            dtype, size=time_steps, element_shape=[rows, gates * units]
        )
        _, dh, dzs = tf.while_loop(
            lambda t, *_: t >= 0, body, (time_steps - 1, dh, dzs)
        )
        flat_h = tf.reshape(hs.stack(), [-1, units])
        flat_dz = tf.reshape(dzs.stack(), [-1, gates * units])
        return dh, tf.matmul(flat_h, flat_dz, transpose_a=True)

    return train if training else inference


def bare_loop_gflops(
    batch, units, gates, time_steps, shards, jit, repeats, dtype, training
):
    """GFLOP/s of ``bare_loop`` over a batch of ``batch`` rows, run as
    ``shards`` loops side by side (each its own call), through XLA's
    kernels (``jit``) or TensorFlow's."""
    rows = batch // shards
    fn = tf.function(
        bare_loop(rows, units, gates, time_steps, dtype, training), jit_compile=jit
    )
    starts = [
        (
            tf.cast(tf.random.normal([rows, units]), dtype),
            tf.cast(tf.random.normal([rows, units]), dtype),
        )
        for _ in range(shards)
    ]
    run = tf.function(lambda: [fn(h, dh) for h, dh in starts])
    seconds = timed(
        lambda: tf.nest.map_structure(lambda r: r.numpy(), run()), repeats, 0.2
    )
    flops = 2 * rows * shards * units * gates * units * time_steps
    return (3 if training else 1) * flops / seconds / 1e9


def shard_options(batch):
    """One loop, and one loop per core (at least 8 rows each)."""
    return sorted({1, max(1, min(os.cpu_count() or 1, batch // 8))})


def loop_limits(args, units, gates, dtype="float32"):
    """``{mode: (GFLOP/s, how)}``: the best bare loop of ``gates * units``
    wide steps for inference and training, over both kernels and the shard
    options; ``how`` says which (``"XLA x2"``: XLA, two loops)."""
    best = {}
    for mode in ("inference", "training"):
        rates = []
        for jit in (True, False):
            for shards in shard_options(args.batch):
                rate = bare_loop_gflops(
                    args.batch,
                    units,
                    gates,
                    args.time,
                    shards,
                    jit,
                    args.repeats,
                    dtype,
                    mode == "training",
                )
                rates.append((rate, f"{'XLA' if jit else 'TF'} x{shards}"))
        best[mode] = max(rates)
    return best
