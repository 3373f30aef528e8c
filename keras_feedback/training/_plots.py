"""``plot_trace``: the picture of a feedback layer's trace (h, c, α)."""

from typing import TYPE_CHECKING
from typing import Any
from typing import Mapping
from typing import Optional
from typing import Sequence

import numpy as np

from keras_feedback._api import public

if TYPE_CHECKING:
    import matplotlib.figure

_LABELS = {"h": "h (hidden)", "c": "c (feedback)", "alpha": "α (attention)"}


def _one_sequence(name, value, example):
    value = np.asarray(value)
    if value.ndim == 3:
        if not 0 <= example < value.shape[0]:
            raise ValueError(
                f"Argument `example` must index the batch of {value.shape[0]} "
                f"sequences of `{name}`, got {example}"
            )
        value = value[example]
    if value.ndim == 1:
        value = value[:, None]
    if value.ndim != 2:
        raise ValueError(
            f"`{name}` must be (time, units) or (batch, time, units), got shape "
            f"{value.shape}"
        )
    return value


@public("keras_feedback.training.plot_trace", serializable=False)
def plot_trace(
    trace: Mapping[str, Any],
    inputs: Any = None,
    *,
    example: int = 0,
    title: Optional[str] = None,
    input_labels: Optional[Sequence[str]] = None,
) -> "matplotlib.figure.Figure":
    """Draws a feedback layer's trace over time: one heat map per signal.

    ``trace`` is what a layer built with ``return_trace=True`` returns last:
    a dict with ``"h"`` and, where the layer has them, ``"c"`` and
    ``"alpha"``. Each row of the figure shows one signal (units on the y
    axis, time steps on the x axis); ``inputs``, when given, is drawn first.

    Args:
        trace: dict of arrays ``(batch, time, units)`` or ``(time, units)``.
        inputs: optional ``(batch, time, features)`` or ``(time, features)``
            inputs of the same sequences.
        example: which sequence of a batch to draw.
        title: optional title of the figure.
        input_labels: optional names of the input features (y tick labels).

    Returns:
        The ``matplotlib.figure.Figure`` (not shown; ``fig.savefig(path)``
        writes it). It is made without pyplot, so it needs no display.

    Example:

    >>> import numpy as np
    >>> from keras_feedback.layers import Feedback
    >>> from keras_feedback.training import plot_trace
    >>> x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")
    >>> layer = Feedback(4, feedback_units=2, attention=True, return_trace=True)
    >>> _, trace = layer(x)
    >>> figure = plot_trace(trace, x)
    >>> [axes.get_ylabel() for axes in figure.axes[:4]]  # then the colour bars
    ['input x', 'h (hidden)', 'c (feedback)', 'α (attention)']
    """
    from matplotlib.figure import Figure

    if not isinstance(trace, dict) or "h" not in trace:
        raise TypeError(
            "Argument `trace` must be the dict of a layer's `return_trace=True` "
            f"output (keys 'h', 'c', 'alpha'), got {type(trace).__name__}"
        )
    rows = []
    if inputs is not None:
        rows.append(("input x", _one_sequence("inputs", inputs, example)))
    for key in ("h", "c", "alpha"):
        if key in trace:
            rows.append((_LABELS[key], _one_sequence(key, trace[key], example)))
    fig = Figure(figsize=(8, 1.2 + 1.6 * len(rows)))
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, (label, values) in zip(axes, rows):
        image = ax.imshow(
            values.T, aspect="auto", interpolation="nearest", cmap="viridis"
        )
        ax.set_ylabel(label)
        fig.colorbar(image, ax=ax, pad=0.01)
    if inputs is not None and input_labels is not None:
        axes[0].set_yticks(range(len(input_labels)), input_labels)
    axes[-1].set_xlabel("time step")
    if title is not None:
        axes[0].set_title(title)
    fig.tight_layout()
    return fig
