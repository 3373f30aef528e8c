"""A numpy implementation of the feedback equations in shared/DESIGN.md.

Written from the equations, independently of the library's step math, so
that the tests compare two implementations rather than one with itself.
"""

import numpy as np

ACTIVATIONS = {
    "tanh": np.tanh,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    # Complex-safe (complex-step derivatives): the real part decides.
    "relu": lambda x: np.where(np.real(x) > 0, x, 0.0),
    "linear": lambda x: x,
    None: lambda x: x,
}


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def layer_norm(x, gamma, beta, eps=1e-3):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def feedback_step(w, x, h, carry, c, cfg):
    """One step; ``w`` maps weight names to arrays, ``cfg`` the layer options."""
    act = ACTIVATIONS[cfg.get("activation", "tanh")]
    rec_act = ACTIVATIONS[cfg.get("recurrent_activation", "sigmoid")]
    fb_act = ACTIVATIONS[cfg.get("feedback_activation", "sigmoid")]
    core = cfg["core"]
    fb = cfg["feedback_units"]
    bias = w.get("bias")
    xin = x @ w["kernel"]
    if fb:
        xin = xin + c @ w["feedback_recurrent_kernel"]
    new_carry = None
    if core == "indrnn":
        # Li et al. 2018: an elementwise recurrent weight u.
        h_new = act(xin + w["recurrent_kernel"] * h + (bias if bias is not None else 0))
    elif core == "gru" and not cfg.get("reset_after", True):
        # Cho et al. 2014, Keras's GRU(reset_after=False): r multiplies h
        # before U_h; one bias.
        if bias is not None:
            xin = xin + bias
        u = w["recurrent_kernel"]
        units = u.shape[0]
        xz, xr, xh = np.split(xin, 3, axis=-1)
        z = rec_act(xz + h @ u[:, :units])
        r = rec_act(xr + h @ u[:, units : 2 * units])
        cand = act(xh + (r * h) @ u[:, 2 * units :])
        h_new = z * h + (1 - z) * cand
    if core in ("simple", "gru", "lstm"):
        rec = h @ w["recurrent_kernel"]
    if core == "simple":
        h_new = act(xin + rec + (bias if bias is not None else 0))
    elif core == "gru" and cfg.get("reset_after", True):
        if bias is not None:
            xin = xin + bias[0]
            rec = rec + bias[1]
        xz, xr, xh = np.split(xin, 3, axis=-1)
        rz, rr, rh = np.split(rec, 3, axis=-1)
        z = rec_act(xz + rz)
        r = rec_act(xr + rr)
        cand = act(xh + r * rh)
        h_new = z * h + (1 - z) * cand
    elif core == "lstm":
        pre = xin + rec + (bias if bias is not None else 0)
        i, f, g, o = np.split(pre, 4, axis=-1)
        new_carry = rec_act(f) * carry + rec_act(i) * act(g)
        h_new = rec_act(o) * act(new_carry)
    if cfg.get("layer_norm"):
        h_new = layer_norm(h_new, w["layer_norm_gamma"], w["layer_norm_beta"])
    if cfg.get("residual"):
        h_new = h + h_new
    c_new = None
    if fb:
        c_new = fb_act(h_new @ w["feedback_kernel"] + w.get("feedback_bias", 0))
    y, alpha = readout(w, h_new, c_new, cfg)
    return y, h_new, new_carry, c_new, alpha


def readout(w, h, c, cfg):
    """``(y, alpha)`` of the hidden state ``h`` (or the attentional state)
    and the feedback ``c`` (None without): the gate and the output
    projection."""
    out_act = ACTIVATIONS[cfg.get("output_activation")]
    parts = [h] + ([c] if c is not None else [])
    alpha = None
    gated = h
    if cfg.get("attention"):
        alpha = sigmoid(
            np.concatenate(parts, -1) @ w["attention_kernel"]
            + w.get("attention_bias", 0)
        )
        gated = alpha * h
    y = gated
    if cfg.get("output_units"):
        read = np.concatenate([gated] + parts[1:], -1)
        y = out_act(read @ w["output_kernel"] + w.get("output_bias", 0))
    return y, alpha


def _held(keep, new, old):
    """A masked step: each of ``new`` where ``keep``, else the matching
    ``old`` (None stays None)."""
    return tuple(None if n is None else np.where(keep, n, o) for n, o in zip(new, old))


def feedback_sequence(w, xs, cfg, mask=None, initial=None, go_backwards=False):
    """Runs the cell over ``xs`` (B, T, D); returns outputs, final states, trace."""
    batch, steps, _ = xs.shape
    units, fb = cfg["units"], cfg["feedback_units"]
    if initial is None:
        h = np.zeros((batch, units))
        carry = np.zeros((batch, units)) if cfg["core"] == "lstm" else None
        c = np.zeros((batch, fb)) if fb else None
    else:
        initial = list(initial)
        h = initial.pop(0)
        carry = initial.pop(0) if cfg["core"] == "lstm" else None
        c = initial.pop(0) if fb else None
    order = range(steps - 1, -1, -1) if go_backwards else range(steps)
    outputs, trace = [], {"h": [], "c": [], "alpha": []}
    y_prev = np.zeros((batch, cfg.get("output_units") or units))
    alpha_prev = np.zeros((batch, units))
    for t in order:
        y, h2, carry2, c2, alpha = feedback_step(w, xs[:, t], h, carry, c, cfg)
        if mask is not None:
            keep = mask[:, t][:, None]
            y, h2, carry2, c2 = _held(keep, (y, h2, carry2, c2), (y_prev, h, carry, c))
            (alpha,) = _held(keep, (alpha,), (alpha_prev,))
        h, carry, c, y_prev = h2, carry2, c2, y
        if alpha is not None:
            alpha_prev = alpha
        outputs.append(y)
        trace["h"].append(h)
        trace["c"].append(c)
        trace["alpha"].append(alpha)
    states = [s for s in (h, carry, c) if s is not None]
    trace = {k: np.stack(v, 1) for k, v in trace.items() if v and v[0] is not None}
    return np.stack(outputs, 1), states, trace


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def memory_weights(w, h, memory, mask, cfg):
    """Attention weights ``(B, M)`` of one step's ``h`` over ``memory``."""
    form = cfg["memory_attention"]
    keys = memory @ w["memory_kernel"]  # (B, M, A)
    query = h
    if form == "additive" or cfg.get("memory_units"):
        query = h @ w["memory_query_kernel"]
    if form == "additive":
        scores = np.tanh(keys + query[:, None]) @ w["memory_score_kernel"]
    else:
        scores = np.einsum("bma,ba->bm", keys, query)
        if form == "scaled_dot":
            scores = scores / np.sqrt(keys.shape[-1])
    if mask is None:
        return softmax(scores)
    weights = np.zeros_like(scores)
    for b in range(scores.shape[0]):
        if mask[b].any():
            weights[b, mask[b]] = softmax(scores[b, mask[b]])
    return weights


def attention_sequence(w, xs, memory, cfg, memory_mask=None, mask=None):
    """An attention decoder over ``xs`` (B, T, D) attending over ``memory``
    (B, M, Dm): Luong's attentional state, input feeding as inputs
    concatenated to ``x_t``. Returns outputs, final states, per-step weights."""
    batch, steps, _ = xs.shape
    units, fb = cfg["units"], cfg["feedback_units"]
    feeding = cfg.get("input_feeding", True)
    core_cfg = dict(cfg, attention=False, output_units=None)
    core_w = dict(w)
    if feeding:
        core_w["kernel"] = np.concatenate([w["kernel"], w["input_feeding_kernel"]], 0)
    h = np.zeros((batch, units))
    carry = np.zeros((batch, units)) if cfg["core"] == "lstm" else None
    c = np.zeros((batch, fb)) if fb else None
    att = np.zeros((batch, units))
    y_prev = np.zeros((batch, cfg.get("output_units") or units))
    outputs, alignments = [], []
    a_prev = np.zeros(memory.shape[:2])
    for t in range(steps):
        x = np.concatenate([xs[:, t], att], -1) if feeding else xs[:, t]
        _, h2, carry2, c2, _ = feedback_step(core_w, x, h, carry, c, core_cfg)
        a = memory_weights(w, h2, memory, memory_mask, cfg)
        context = np.einsum("bm,bmd->bd", a, memory)
        att2 = np.tanh(
            np.concatenate([h2, context], -1) @ w["memory_output_kernel"]
            + w.get("memory_output_bias", 0)
        )
        y, _ = readout(w, att2, c2, cfg)
        if mask is not None:
            keep = mask[:, t][:, None]
            y, h2, carry2, c2, att2, a = _held(
                keep, (y, h2, carry2, c2, att2, a), (y_prev, h, carry, c, att, a_prev)
            )
        h, carry, c, att, y_prev, a_prev = h2, carry2, c2, att2, y, a
        outputs.append(y)
        alignments.append(a)
    states = [s for s in (h, carry, c) if s is not None] + ([att] if feeding else [])
    return np.stack(outputs, 1), states, np.stack(alignments, 1)
