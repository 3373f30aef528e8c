"""The recurrence engines: they own time and know nothing about any cell.

Internal. A layer picks one by name with ``get``; every engine has the
signature of ``keras_feedback.engine._reference.run``.
"""

from keras_feedback.engine import _reference

ENGINES = {"reference": _reference.run}
ENGINE_NAMES = ("auto",) + tuple(ENGINES)


def resolve(name):
    """The engine name ``"auto"`` stands for here."""
    return "reference" if name == "auto" else name


def get(name):
    """The run function of engine ``name`` (``"auto"`` picks the best one)."""
    name = resolve(name)
    if name not in ENGINES:
        raise ValueError(
            f"Unknown engine {name!r}. Expected one of {ENGINE_NAMES}."
        )
    return ENGINES[name]
