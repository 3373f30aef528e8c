"""Argument checks shared by every namespace."""

import numpy as np


def check_bool(name, value):
    """``value`` as a bool, or a ``TypeError`` naming the argument.

    Only ``True`` and ``False`` (NumPy's too) are booleans: a string such as
    ``"False"`` is truthy, and an int is no answer to a yes-or-no question.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(
        f"Argument `{name}` must be True or False, got {value!r} "
        f"({type(value).__name__})"
    )
