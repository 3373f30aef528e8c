"""The modes a call runs in, in one place: each a context variable that a
``with`` block sets and a call reads, so that no layer is mutated.

- ``scope(name, unroll)``: the engine every layer called in the block runs,
  whatever its own ``engine`` argument, and whether its loop unrolls
  (``scoped``, ``unrolled``);
- ``pure_calls()``: calls are pure functions of their inputs, for export
  (``pure``).

``check_name`` is the one check of an engine name.
"""

import contextlib
import contextvars

ENGINE_NAMES = ("auto", "xla", "reference")

_SCOPED = contextvars.ContextVar("keras_feedback_engine", default=None)
_UNROLLED = contextvars.ContextVar("keras_feedback_unrolled", default=False)
_PURE = contextvars.ContextVar("keras_feedback_pure_calls", default=False)


def check_name(name, argument="engine"):
    """``name`` if it names an engine, else a ``ValueError`` naming it."""
    if name not in ENGINE_NAMES:
        raise ValueError(
            f"Unknown engine {name!r}: argument `{argument}` must be one of "
            f"{ENGINE_NAMES}, got {name!r}"
        )
    return name


@contextlib.contextmanager
def _setting(variable, value):
    token = variable.set(value)
    try:
        yield
    finally:
        variable.reset(token)


@contextlib.contextmanager
def scope(name, unroll=False):
    """Every layer called in the block runs engine ``name`` (not its own);
    ``unroll=True``: and unrolls its loop wherever the time axis is static
    (a loop-free graph, for LiteRT's 16x8 quantizer)."""
    with _setting(_SCOPED, check_name(name)), _setting(_UNROLLED, bool(unroll)):
        yield


def scoped():
    """The engine name a ``scope`` imposes, or None outside any."""
    return _SCOPED.get()


def unrolled():
    """Whether a ``scope`` asks for unrolled loops."""
    return _UNROLLED.get()


@contextlib.contextmanager
def pure_calls():
    """Calls in the block are pure functions of their inputs, for export.

    A stateful layer neither assigns its state variables nor reads them: it
    starts from a snapshot of their current values (``snapshot_states``),
    as a graph that TF Serving runs must (the client holds the state of a
    stream). No shape assertion is added to the graph (LiteRT has no
    builtin for it). Mutates no layer.
    """
    with _setting(_PURE, True):
        yield


def pure():
    """Whether the call being made is inside ``pure_calls``."""
    return _PURE.get()
