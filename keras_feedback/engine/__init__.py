"""The recurrence engines: they own time and know nothing about any cell.

Internal. A layer picks one by name with ``get``; every engine has the
signature of ``keras_feedback.engine._reference.run``.

- ``"xla"``: the fused engine (``_xla.run``): XLA-compiled forward loop and
  an XLA-compiled reverse-time loop as its gradient.
- ``"reference"``: a plain ``tf.while_loop`` differentiated by TensorFlow;
  the oracle of the fused engine.
- ``"auto"``: ``"xla"``, except with ``unroll=True``, where it is
  ``"reference"``: an unrolled loop is asked for to get a loop-free graph
  (e.g. for export), and compiling an unrolled loop with XLA costs compile
  time that grows with the sequence length. ``run`` of ``"auto"`` decides
  per call, so layers need not know.

``pad_time`` pads time to a bucket (with a mask) so that XLA compiles once
per bucket rather than once per sequence length. See ``docs/engine.md``.
"""

from keras_feedback.engine import _reference
from keras_feedback.engine import _xla
from keras_feedback.engine._buckets import pad_time

__all__ = ["ENGINES", "ENGINE_NAMES", "get", "pad_time", "resolve"]


def resolve(name, unroll=False):
    """The engine name ``"auto"`` stands for (``"reference"`` when unrolled)."""
    if name != "auto":
        return name
    return "reference" if unroll else "xla"


def _auto(*args, unroll=False, **kwargs):
    return ENGINES[resolve("auto", unroll)](*args, unroll=unroll, **kwargs)


ENGINES = {"xla": _xla.run, "reference": _reference.run}
ENGINE_NAMES = ("auto",) + tuple(ENGINES)


def get(name):
    """The run function of engine ``name`` (``"auto"`` picks per call)."""
    if name == "auto":
        return _auto
    if name not in ENGINES:
        raise ValueError(f"Unknown engine {name!r}. Expected one of {ENGINE_NAMES}.")
    return ENGINES[name]
