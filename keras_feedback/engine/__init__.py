"""The recurrence engines: they own time and know nothing about any cell.

Internal. A cell describes its step as a ``Recurrence`` (``_contract``); a
layer runs it with ``run(name, recurrence, params, inputs, states, ...)``;
every engine has the signature of ``keras_feedback.engine._reference.run``.

- ``"xla"``: the fused engine (``_xla.run``): XLA-compiled forward loop and
  an XLA-compiled reverse-time loop as its gradient.
- ``"reference"``: a plain ``tf.while_loop`` differentiated by TensorFlow;
  the oracle of the fused engine.
- ``"auto"``: ``"xla"`` where the graph runs in this process: eager calls,
  calls under a gradient tape (training) and calls inside a distribution
  strategy's ``run`` (every step of Keras's ``fit``, ``evaluate`` and
  ``predict``). A graph traced outside all three (``model.export``,
  ``tf.lite.TFLiteConverter.from_keras_model``, ``tf.saved_model.save``, a
  ``tf.function`` of one's own) may be saved and run where XLA is off, or
  converted to LiteRT: there ``"auto"`` is ``"reference"``. With
  ``unroll=True`` it is always ``"reference"``: an unrolled loop is asked for
  to get a loop-free graph, and compiling an unrolled loop with XLA costs
  compile time that grows with the sequence length. And a small call is
  ``"reference"`` too (``choose``): one whose step does fewer than
  ``AUTO_MIN_STEP_WORK`` multiply-adds per example (about the weights it
  reads) over fewer than ``AUTO_MIN_STEPS`` steps, or a time axis of any
  length: XLA's compilation (0.3-0.6 s per shape) costs more there than it
  saves in a first epoch, and a varying length would compile per bucket.
  And a call in bfloat16 on CPU (``tf_kernels``: inputs of a dtype in
  ``AUTO_TF_KERNEL_DTYPES``) runs the reference loop on TensorFlow's
  kernels (oneDNN), whose bfloat16 matmul XLA:CPU's does not match
  (docs/engine.md): an inference call (no tape records it) one loop per
  batch shard side by side, a training call one loop; an eager call as one
  graph function (op by op, its while loop would step in Python).

``scope(name)`` makes every layer called inside the block run engine
``name``, whatever its own ``engine`` argument: export traces with
``scope("reference")`` and mutates no layer; ``pure_calls()`` makes calls
pure functions of their inputs. Both are modes of ``_modes``, as is
``check_name``, the one check of an engine name.

``pad_time`` pads time to a bucket (with a mask) so that XLA compiles once
per bucket rather than once per sequence length. See ``docs/engine.md``.
"""

import functools

import tensorflow as tf
from tensorflow.python.eager import record

from keras_feedback.engine import _buckets
from keras_feedback.engine import _modes
from keras_feedback.engine import _reference
from keras_feedback.engine import _xla
from keras_feedback.engine import _xla_shards
from keras_feedback.engine._buckets import pad_time
from keras_feedback.engine._contract import Deferred
from keras_feedback.engine._contract import Recurrence
from keras_feedback.engine._modes import ENGINE_NAMES
from keras_feedback.engine._modes import check_name
from keras_feedback.engine._modes import pure
from keras_feedback.engine._modes import pure_calls
from keras_feedback.engine._modes import scope
from keras_feedback.engine._modes import scoped

__all__ = [
    "ENGINES",
    "ENGINE_NAMES",
    "Deferred",
    "Recurrence",
    "check_name",
    "choose",
    "get",
    "pad_time",
    "pure",
    "pure_calls",
    "resolve",
    "run",
    "scope",
    "scoped",
    "tf_kernels",
]

# By name: ``_modes.ENGINE_NAMES`` but "auto".
ENGINES = {"xla": _xla.run, "reference": _reference.run}
# The size rule of "auto" (``choose``; measured in docs/engine.md).
AUTO_MIN_STEP_WORK = 32768
AUTO_MIN_STEPS = 64
# The compute dtypes "auto" runs on TensorFlow's kernels on CPU
# (``tf_kernels``; measured in docs/engine.md).
AUTO_TF_KERNEL_DTYPES = ("bfloat16",)


def _runs_here():
    """Whether the call being made runs in this process only: eagerly, under
    a gradient tape, or inside a distribution strategy's ``run`` (where
    Keras's train, test and predict steps run). The default replica context
    (no ``run``) numbers its replica with a Python int, ``run`` with a
    tensor."""
    if tf.executing_eagerly() or record.could_possibly_record():
        return True
    context = tf.distribute.get_replica_context()
    return context is not None and not isinstance(context.replica_id_in_sync_group, int)


def resolve(name, unroll=False):
    """The engine ``name`` stands for here: the scoped one if any; ``"auto"``
    as ``"reference"`` when unrolled or traced into a graph that may be
    exported (see the module docstring), else ``"xla"``."""
    name = scoped() or name
    if name != "auto":
        return name
    return "xla" if not unroll and _runs_here() else "reference"


def choose(name, inputs, unroll=False, step_work=None):
    """The engine a call runs: ``resolve``'s, except that ``"auto"`` runs
    the reference loop for a small call (the module docstring): a step of
    ``step_work`` multiply-adds per example (None: unknown, not small) below
    ``AUTO_MIN_STEP_WORK`` and a time axis of fewer than ``AUTO_MIN_STEPS``
    steps, or of a length unknown when traced."""
    engine = resolve(name, unroll)
    if engine != "xla" or (scoped() or name) != "auto" or step_work is None:
        return engine
    steps = inputs.shape[1]
    if step_work < AUTO_MIN_STEP_WORK and (steps is None or steps < AUTO_MIN_STEPS):
        return "reference"
    return engine


def tf_kernels(name, inputs):
    """Whether ``"auto"``, where it would run the fused engine, runs this
    call on TensorFlow's kernels instead (the reference loop): a call on CPU
    whose inputs are of a dtype in ``AUTO_TF_KERNEL_DTYPES``."""
    return (
        (scoped() or name) == "auto"
        and inputs.dtype.name in AUTO_TF_KERNEL_DTYPES
        and not tf.config.list_logical_devices("GPU")
    )


def _sharded_reference(
    recurrence, params, inputs, initial_states, mask=None, per_example=None, **options
):
    # The reference loop, one per batch shard side by side (as the fused
    # engine runs its shards on CPU).
    def one(params, inputs, mask, states):
        return _reference.run(recurrence, params, inputs, states, mask=mask, **options)

    return tuple(
        _xla_shards.run_sharded(one, params, per_example, inputs, mask, initial_states)
    )


def _tf_kernel_run(training, recurrence, params, inputs, initial_states, **options):
    # TensorFlow's kernels: a training call one loop (faster), an inference
    # call one loop per batch shard side by side.
    if training:
        return ENGINES["reference"](
            recurrence, params, inputs, initial_states, **options
        )
    return _sharded_reference(recurrence, params, inputs, initial_states, **options)


@functools.cache
def _tf_kernel_graph(recurrence, training, static):
    """``_tf_kernel_run`` of ``recurrence`` as one graph function (not
    compiled), for eager calls: run op by op, its while loop would step in
    Python (over ten times slower: docs/engine.md, M10).
    ``training`` (whether a tape records the call) is part of the key: the
    reference loop chooses how it writes its outputs when it is traced."""

    def graph(params, inputs, initial_states, mask):
        return _tf_kernel_run(
            training,
            recurrence,
            params,
            inputs,
            initial_states,
            mask=mask,
            **dict(static),
        )

    return tf.function(graph, reduce_retracing=True, autograph=False)


def get(name, unroll=False):
    """The run function of engine ``name`` (see ``resolve``)."""
    return ENGINES[resolve(check_name(name), unroll)]


def _varying_time(inputs):
    # An eager call, or a graph traced for any length (time axis None): the
    # next call may bring another length, which XLA would compile again.
    return tf.executing_eagerly() or inputs.shape[1] is None


def run(
    name,
    recurrence,
    params,
    inputs,
    initial_states,
    time_buckets=None,
    step_work=None,
    **options,
):
    """Runs ``recurrence`` with engine ``name`` (see ``choose``).

    ``time_buckets`` (``"auto"``, a list of lengths, or None): where the
    fused engine runs and the length may vary (eager calls, graphs traced
    with a dynamic time axis), time is padded to its bucket and the padding
    masked, so that XLA compiles once per bucket instead of once per length;
    the results of the real steps are those of the unpadded run, and the
    outputs keep the caller's length.
    """
    if _modes.unrolled() and inputs.shape[1] is not None:
        options["unroll"] = True
    unroll = options.get("unroll", False)
    chosen = choose(check_name(name), inputs, unroll, step_work)
    if chosen == "xla" and tf_kernels(name, inputs):
        training = record.could_possibly_record()
        if tf.executing_eagerly():
            mask = options.pop("mask", None)
            static = tuple(sorted(options.items()))
            return _tf_kernel_graph(recurrence, training, static)(
                params, inputs, list(initial_states), mask
            )
        return _tf_kernel_run(
            training, recurrence, params, inputs, initial_states, **options
        )
    engine = ENGINES[chosen]
    if chosen != "xla" or time_buckets is None:
        return engine(recurrence, params, inputs, initial_states, **options)
    if not _varying_time(inputs):
        return engine(recurrence, params, inputs, initial_states, **options)
    inputs, mask, time = _buckets.pad_to_bucket(
        inputs, options.pop("mask", None), time_buckets
    )
    outputs, last, states, traces = engine(
        recurrence, params, inputs, initial_states, mask=mask, **options
    )
    backwards = options.get("go_backwards", False)
    traces = {k: _buckets.unpad(v, time, backwards) for k, v in traces.items()}
    return _buckets.unpad(outputs, time, backwards), last, states, traces
