"""Gradient flow through time: is a feedback loop vanishing or exploding?

For a model with a ``keras_feedback.layers.Feedback`` layer and a probe batch
``(x, y)``, ``GradientFlow.measure`` computes

- ``‖∂L/∂h_t‖`` for every time step ``t``: the total derivative of the loss
  with respect to the hidden state at step ``t`` (every path from ``h_t`` to
  the loss: the step's own output and feedback signal and all later steps),
  as the Frobenius norm over the batch and units;
- the spectral norm of the step Jacobian ``∂s_t/∂s_{t-1}`` of the full state
  ``s = [h, (lstm carry), (feedback c)]``, averaged over the batch;

and a verdict from them (``VANISHING_RATIO``, ``EXPLODING_RATIO``). The
layer's recurrence is re-run step by step with its public ``step``, in
processing order, so that every ``h_t`` is a tensor the gradient can be
taken with respect to (so the cost grows with the number of steps: probe
with a few hundred at most); the rest of the model runs as it is, in
inference mode. Masks (from a ``Masking`` layer or ``mask_zero`` embedding
upstream, or given) are applied as the layer applies them: padded steps are
reported as masked (NaN per example, left out of the batch figures), and an
example's figures on its valid steps are those it gives run alone. ``GradientFlow`` is the callback that measures every ``every``
batches during training, logs to TensorBoard and draws a heat map (time step
x training step); ``keras-feedback diagnose`` prints the same figures for a
saved model.
"""

import dataclasses
import io
import math as pymath
import os
from typing import Any
from typing import Callable
from typing import Union

import keras
import numpy as np
import tensorflow as tf

from keras_feedback._api import public
from keras_feedback._checks import check_bool
from keras_feedback.engine import _masking
from keras_feedback.layers import Feedback

# ‖∂L/∂h_first‖ / ‖∂L/∂h_last‖ below this: vanishing; above the other:
# exploding. Between them the loop passes gradients over the whole sequence.
VANISHING_RATIO = 1e-2
EXPLODING_RATIO = 1e2


@dataclasses.dataclass(frozen=True)
class GradientFlowReport:
    """The gradient-flow figures of one probe batch.

    Attributes:
        gradient_norms: ``(T,)`` ``‖∂L/∂h_t‖`` in processing order.
        jacobian_norms: ``(T,)`` mean spectral norm of ``∂s_t/∂s_{t-1}``
            (step 0: with respect to the initial state), or None.
        ratio: ``gradient_norms[0] / gradient_norms[-1]``.
        rate: the geometric mean factor per step back in time,
            ``ratio ** (1 / (T - 1))``.
        verdict: ``"vanishing"``, ``"exploding"`` or ``"stable"``, from the
            steps where some example is not padding.
        example_gradient_norms: ``(batch, T)`` ``‖∂L_i/∂h_t‖`` of each
            example's own loss ``L_i``, in processing order; NaN at masked
            (padded) steps.
        mask: ``(batch, T)`` boolean, in processing order: False where a step
            is masked (its figures are not gradients that vanished).
    """

    gradient_norms: np.ndarray
    jacobian_norms: object
    ratio: float
    rate: float
    verdict: str
    example_gradient_norms: object = None
    mask: object = None

    def summary(self):
        """A few lines of text: the figures and the verdict."""
        norms = self.gradient_norms
        steps = len(norms)
        lines = [
            f"time steps: {steps}",
            f"|dL/dh_t| at the first step: {norms[0]:.4g}, at the last: "
            f"{norms[-1]:.4g}",
            f"first/last ratio: {self.ratio:.4g} (per step back in time: "
            f"x{self.rate:.4g})",
        ]
        if self.jacobian_norms is not None:
            jac = np.asarray(self.jacobian_norms)
            geo = float(np.exp(np.mean(np.log(np.maximum(jac, 1e-30)))))
            lines.append(
                f"step Jacobian spectral norm: geometric mean {geo:.4g}, "
                f"min {jac.min():.4g}, max {jac.max():.4g}"
            )
        lines.append(
            f"verdict: {self.verdict} (vanishing below ratio {VANISHING_RATIO:g}, "
            f"exploding above {EXPLODING_RATIO:g})"
        )
        return "\n".join(lines)


def _verdict(norms):
    first, last = float(norms[0]), float(norms[-1])
    if not np.all(np.isfinite(norms)):
        return float("inf"), float("inf"), "exploding"
    if last == 0.0:
        ratio = float("inf") if first > 0 else 1.0
    else:
        ratio = first / last
    steps = len(norms)
    if ratio == 0.0:
        rate = 0.0
    elif steps > 1 and pymath.isfinite(ratio):
        rate = ratio ** (1.0 / (steps - 1))
    else:
        rate = 1.0 if steps <= 1 else float("inf")
    if ratio < VANISHING_RATIO:
        verdict = "vanishing"
    elif ratio > EXPLODING_RATIO:
        verdict = "exploding"
    else:
        verdict = "stable"
    return ratio, rate, verdict


def _feedback_layers(model):
    return [layer for layer in model.layers if isinstance(layer, Feedback)]


def _find_layer(model, layer):
    if isinstance(layer, Feedback):
        return layer
    if isinstance(layer, str):
        try:
            found = model.get_layer(layer)
        except ValueError:
            found = None
        if not isinstance(found, Feedback):
            names = [f.name for f in _feedback_layers(model)]
            raise ValueError(
                f"Argument `layer`: the model has no Feedback layer named "
                f"{layer!r}; its Feedback layers: {names}"
            )
        return found
    if layer is not None:
        raise TypeError(
            f"Argument `layer` must be None, a layer name or a Feedback layer, "
            f"got {layer!r}"
        )
    found = _feedback_layers(model)
    if not found:
        raise ValueError(
            f"Argument `model`: {model.name!r} holds no "
            "keras_feedback.layers.Feedback layer"
        )
    return found[0]


def _loss_fn(model, loss):
    loss = loss if loss is not None else getattr(model, "loss", None)
    if loss is None:
        raise ValueError(
            f"Argument `model`: {model.name!r} is not compiled with a loss; pass `loss`"
        )
    if isinstance(loss, (dict, list, tuple)):
        raise ValueError(
            f"Argument `loss`: gradient flow needs a single-output loss, got {loss!r}"
        )
    fn = keras.losses.get(loss)

    def example_losses(y, y_pred):
        """``(batch,)``: each example's loss (its mean over other axes)."""
        value = tf.convert_to_tensor(fn(y, y_pred))
        if value.shape.rank == 0:
            raise ValueError(
                f"Argument `loss`: {loss!r} reduces over the batch; gradient flow "
                "needs a loss of each example"
            )
        return tf.reduce_mean(tf.reshape(value, [tf.shape(value)[0], -1]), -1)

    return example_losses


def _chain(layers):
    def apply(x, training=False):
        for layer in layers:
            x = layer(x, training=training)
        return x

    return apply


def _single(tensors):
    return tensors[0] if len(tensors) == 1 else tensors


class _Probe:
    """Re-runs ``layer`` step by step inside ``model`` and differentiates."""

    def __init__(self, model, layer, loss):
        self.layer = _find_layer(model, layer)
        layer = self.layer
        if layer.return_state or layer.return_trace:
            raise ValueError(
                f"Argument `layer`: {layer.name!r} returns states or traces; "
                "gradient flow needs a Feedback layer with a single output"
            )
        if isinstance(model, keras.Sequential):
            # By position: a reloaded Sequential may have rebuilt its graph.
            index = model.layers.index(layer)
            self.upstream = _chain(model.layers[:index])
            self.downstream = _chain(model.layers[index + 1 :])
        else:
            inputs = getattr(model, "inputs", None)
            outputs = getattr(model, "outputs", None)
            if not inputs or not outputs:
                raise ValueError(
                    f"Argument `model`: {model.name!r} must be a functional "
                    "or Sequential model"
                )
            try:
                self.upstream = keras.Model(_single(inputs), layer.input)
                self.downstream = keras.Model(layer.output, _single(outputs))
            except ValueError as error:
                raise ValueError(
                    f"Argument `model`: the Feedback layer {layer.name!r} must "
                    f"be called exactly once, in {model.name!r} ({error})"
                ) from None
        self.loss = _loss_fn(model, loss)
        self.function = tf.function(self._measure, reduce_retracing=True)

    def _measure(self, x, y, mask, jacobian):
        layer = self.layer
        upstream = self.upstream(x, training=False)
        if mask is None:
            mask = getattr(upstream, "_keras_mask", None)
        sequences = tf.cast(tf.convert_to_tensor(upstream), layer.compute_dtype)
        steps = sequences.shape[1]
        if steps is None:
            raise ValueError(
                "Gradient flow needs a static number of time steps, got inputs "
                f"of shape {tuple(sequences.shape)}"
            )
        batch = tf.shape(sequences)[0]
        order = range(steps - 1, -1, -1) if layer.go_backwards else range(steps)
        if mask is None:
            keep = tf.ones([batch, steps], tf.bool)
        else:
            keep = layer.check_mask(mask, sequences)
        states = layer.start_states(sequences)
        with tf.GradientTape() as tape:
            hidden, entering, outputs = [], [], []
            output = tf.zeros([batch, *layer.step_output_shape], layer.compute_dtype)
            for t in order:
                entering.append(states)
                new_output, new = layer.step(sequences[:, t], states)
                # h_t as the step computes it, before the mask selects: every
                # path to the loss (this step's output too) starts there.
                hidden.append(new[0])
                rank = len(new_output.shape)
                row = tf.reshape(keep[:, t], [-1] + [1] * (rank - 1))
                states = _masking.keep(row, new, states)
                output = _masking.output(
                    row, new_output, output, layer.zero_output_for_mask
                )
                outputs.append(output)
            result = tf.stack(outputs, 1) if layer.return_sequences else outputs[-1]
            prediction = self.downstream(result, training=False)
            # The sum of the examples' losses: its gradient at an example's
            # states is that example's own (as if it ran alone).
            loss = tf.reduce_sum(self.loss(y, prediction))
        grads = tape.gradient(
            loss, hidden, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        rows = tf.cast(batch, grads[0].dtype)
        # (B, T) per-example norms, in processing order.
        per_example = tf.stack(
            [tf.norm(tf.reshape(g, [batch, -1]), axis=-1) for g in grads], 1
        )
        kept = tf.stack([keep[:, t] for t in order], 1)
        per_example = tf.where(
            kept, per_example, tf.constant(np.nan, per_example.dtype)
        )
        valid = tf.where(kept, per_example, tf.zeros_like(per_example))
        norms = tf.sqrt(tf.reduce_sum(tf.square(valid), 0)) / rows
        any_valid = tf.reduce_any(kept, 0)
        norms = tf.where(any_valid, norms, tf.constant(np.nan, norms.dtype))
        if not jacobian:
            return tf.reduce_mean(loss) / rows, norms, per_example, kept, tf.zeros([0])
        sizes = [int(np.prod(s.shape[1:])) for s in entering[0]]
        shapes = [tuple(s.shape[1:]) for s in entering[0]]
        flat = tf.concat(  # (T * B, S), step-major
            [tf.concat([tf.reshape(s, [batch, -1]) for s in e], -1) for e in entering],
            0,
        )
        inputs = tf.concat([sequences[:, t] for t in order], 0)
        with tf.GradientTape() as tape:
            tape.watch(flat)
            parts = [
                tf.reshape(p, [-1, *shape])
                for p, shape in zip(tf.split(flat, sizes, axis=-1), shapes)
            ]
            _, new_states = layer.step(inputs, parts)
            new_flat = tf.concat(
                [tf.reshape(n, [tf.shape(flat)[0], -1]) for n in new_states], -1
            )
        jac = tape.batch_jacobian(new_flat, flat)
        spectral = tf.reshape(tf.linalg.svd(jac, compute_uv=False)[:, 0], [steps, -1])
        weights = tf.cast(tf.transpose(kept), spectral.dtype)
        jac_norms = tf.reduce_sum(spectral * weights, 1) / tf.reduce_sum(weights, 1)
        return loss / rows, norms, per_example, kept, jac_norms

    def measure(self, x, y, jacobian=True, mask=None):
        mask = None if mask is None else tf.convert_to_tensor(mask)
        loss, norms, per_example, kept, jac = self.function(x, y, mask, bool(jacobian))
        norms = np.asarray(norms, "float64")
        kept = np.asarray(kept)
        # Steps where every example is padding have no figure (NaN).
        ratio, rate, verdict = _verdict(norms[~np.isnan(norms)])
        return GradientFlowReport(
            gradient_norms=norms,
            jacobian_norms=np.asarray(jac, "float64") if jacobian else None,
            ratio=ratio,
            rate=rate,
            verdict=verdict,
            example_gradient_norms=np.asarray(per_example, "float64"),
            mask=kept,
        )


def _probe_batch(data, max_examples):
    if isinstance(data, tf.data.Dataset):
        batch = next(iter(data.take(1)))
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError(
                f"Argument `data`: the dataset must yield (x, y) batches, got {batch!r}"
            )
        x, y = batch[0], batch[1]
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    else:
        raise ValueError(
            f"Argument `data` must be (x, y) arrays or a tf.data.Dataset of "
            f"(x, y) batches, got {type(data).__name__}"
        )
    x = tf.convert_to_tensor(x)[:max_examples]
    y = tf.convert_to_tensor(y)[:max_examples]
    return x, y


def heatmap_png(steps, norms, title="log10 |dL/dh_t|"):
    """A PNG (bytes) of ``log10 norms``: time step (y) x training step (x)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    values = np.log10(np.maximum(np.asarray(norms, "float64"), 1e-30)).T
    figure = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if len(steps) > 1:
        extent = [steps[0], steps[-1], values.shape[0] - 0.5, -0.5]
    else:
        extent = [steps[0] - 0.5, steps[0] + 0.5, values.shape[0] - 0.5, -0.5]
    image = axes.imshow(
        values, aspect="auto", cmap="viridis", extent=extent, interpolation="nearest"
    )
    axes.set_xlabel("training step")
    axes.set_ylabel("time step t")
    axes.set_title(title)
    figure.colorbar(image, ax=axes)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


@public("keras_feedback.training.GradientFlow", serializable=False)
class GradientFlow(keras.callbacks.Callback):
    """Records the gradient flow through time of a Feedback layer in training.

    Every ``every`` training batches (and after the first), measures on a
    fixed probe batch ``‖∂L/∂h_t‖`` for every time step ``t`` and the
    spectral norm of each step's Jacobian ``∂s_t/∂s_{t-1}`` (see
    ``measure``). The figures are kept in ``steps``, ``gradient_norms``,
    ``jacobian_norms`` and ``reports``, logged to TensorBoard when
    ``log_dir`` is set (scalars ``gradient_flow/*`` and the heat map as an
    image) and drawn as a PNG heat map (time step x training step, log10
    colour) at ``heatmap_path`` at the end of training.

    Args:
        data: the probe batch: ``(x, y)`` arrays, or a `tf.data.Dataset` of
            ``(x, y)`` batches (its first batch is used).
        every: positive int, measure every ``every`` batches.
        layer: None (the model's first Feedback layer), a layer name or the
            layer.
        log_dir: optional TensorBoard log directory.
        heatmap_path: optional ``.png`` path for the heat map.
        jacobian: bool, also compute the step Jacobian norms (costs
            ``O(batch * T * S^2)`` memory for a state of size ``S``).
        max_examples: positive int, rows of ``data`` used.
        loss: the loss to differentiate; default: the model's compiled loss.

    Example:

    ```python
    flow = keras_feedback.training.GradientFlow((x[:32], y[:32]), every=50,
                                                heatmap_path="flow.png")
    model.fit(x, y, callbacks=[flow])
    print(flow.reports[-1].summary())
    ```
    """

    def __init__(
        self,
        data: Any,
        every: int = 100,
        layer: Union[str, keras.layers.Layer, None] = None,
        log_dir: Union[str, os.PathLike, None] = None,
        heatmap_path: Union[str, os.PathLike, None] = None,
        jacobian: bool = True,
        max_examples: int = 32,
        loss: Union[str, Callable, None] = None,
    ) -> None:
        super().__init__()
        for name, value in (("every", every), ("max_examples", max_examples)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"Argument `{name}` must be a positive integer, got {value!r}"
                )
        self.x, self.y = _probe_batch(data, max_examples)
        self.every = every
        self.layer = layer
        self.log_dir = log_dir
        self.heatmap_path = heatmap_path
        self.jacobian = check_bool("jacobian", jacobian)
        self.loss = loss
        self.steps = []
        self.reports = []
        self._probe = None
        self._writer = None
        self._batches = 0

    @property
    def gradient_norms(self):
        """``(records, T)`` array of ``‖∂L/∂h_t‖``."""
        return np.stack([r.gradient_norms for r in self.reports])

    @property
    def jacobian_norms(self):
        """``(records, T)`` array of mean step Jacobian spectral norms."""
        if not self.jacobian:
            return None
        return np.stack([r.jacobian_norms for r in self.reports])

    @staticmethod
    def measure(model, x, y, layer=None, jacobian=True, loss=None, mask=None):
        """Measures the gradient flow of ``model`` on one batch.

        Args:
            model: a built functional or Sequential model holding a
                ``keras_feedback.layers.Feedback`` layer (without
                ``return_state``/``return_trace``), compiled with a single
                loss unless ``loss`` is given.
            x, y: the batch.
            layer: None (first Feedback layer), a name or the layer.
            jacobian: bool, also the step Jacobian norms.
            loss: optional loss (name, function or `keras.losses.Loss`).
            mask: optional ``(batch, time)`` boolean mask of the layer's
                inputs; by default the mask the layers before it compute
                (``Masking``, ``Embedding(mask_zero=True)``), if any.

        Returns:
            A `GradientFlowReport`.
        """
        return _Probe(model, layer, loss).measure(x, y, jacobian, mask)

    def on_train_begin(self, logs=None):
        self._probe = _Probe(self.model, self.layer, self.loss)
        if self.log_dir is not None:
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        if (self._batches - 1) % self.every == 0:
            self._record(self._batches)

    def _record(self, step):
        report = self._probe.measure(self.x, self.y, self.jacobian)
        self.steps.append(step)
        self.reports.append(report)
        if self._writer is None:
            return
        norms = report.gradient_norms
        scalars = {
            "first_step_norm": norms[0],
            "last_step_norm": norms[-1],
            "log10_ratio": np.log10(report.ratio) if report.ratio > 0 else -np.inf,
        }
        if report.jacobian_norms is not None:
            scalars["mean_jacobian_norm"] = np.mean(report.jacobian_norms)
        png = heatmap_png(self.steps, self.gradient_norms)
        with self._writer.as_default(step=step):
            for name, value in scalars.items():
                tf.summary.scalar(f"gradient_flow/{name}", float(value))
            tf.summary.image("gradient_flow/heatmap", tf.image.decode_png(png)[None])
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self.heatmap_path is not None and self.reports:
            with open(self.heatmap_path, "wb") as f:
                f.write(heatmap_png(self.steps, self.gradient_norms))
        if self._writer is not None:
            self._writer.close()
            self._writer = None
