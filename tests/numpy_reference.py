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


def feedback_step(w, x, h, carry, c, cfg, term=None, scale=None):
    """One step; ``w`` maps weight names to arrays, ``cfg`` the layer options.

    ``term`` (``(B, H)``) and ``scale`` (``(B, 1)``): the gated-feedback
    stack's other layers' term and the gate of the layer's own recurrent
    term in the candidate (Chung et al. 2015; ``stack_sequence``).
    """
    term = 0.0 if term is None else term
    scale = 1.0 if scale is None else scale
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
        h_new = act(
            xin
            + scale * (w["recurrent_kernel"] * h)
            + term
            + (bias if bias is not None else 0)
        )
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
        cand = act(xh + scale * ((r * h) @ u[:, 2 * units :]) + r * term)
        h_new = z * h + (1 - z) * cand
    if core in ("simple", "gru", "lstm"):
        rec = h @ w["recurrent_kernel"]
    if core == "simple":
        h_new = act(xin + scale * rec + term + (bias if bias is not None else 0))
    elif core == "gru" and cfg.get("reset_after", True):
        xz, xr, xh = np.split(xin, 3, axis=-1)
        rz, rr, rh = np.split(rec, 3, axis=-1)
        rh = scale * rh  # the gate scales U_h h, not the recurrent bias
        if bias is not None:
            bz, br, bh = np.split(bias[0], 3)
            cz, cr, ch = np.split(bias[1], 3)
            xz, xr, xh = xz + bz, xr + br, xh + bh
            rz, rr, rh = rz + cz, rr + cr, rh + ch
        z = rec_act(xz + rz)
        r = rec_act(xr + rr)
        cand = act(xh + r * (rh + term))
        h_new = z * h + (1 - z) * cand
    elif core == "lstm":
        pre = xin + (bias if bias is not None else 0)
        i, f, g, o = np.split(pre, 4, axis=-1)
        ri, rf, rg, ro = np.split(rec, 4, axis=-1)
        i, f, g, o = i + ri, f + rf, g + scale * rg + term, o + ro
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


def stack_sequence(layers, stack, xs, cfgs, top_down, go_backwards=False, mask=None):
    """A ``FeedbackStack`` over ``xs`` (B, T, D), from the gated-feedback
    RNN's equations (Chung et al. 2015), written as sums over the source
    layers ``i``.

    ``layers``: each layer's weights (``feedback_step``'s ``w``);
    ``stack``: each layer's ``gate_kernel`` (in_j, L),
    ``gate_recurrent_kernel`` (ΣH, L) and ``top_down_kernel`` (the rows of
    the other layers' ``U^{i->j}``, in layer order); ``cfgs``: each layer's
    options. ``mask`` (B, T): a masked step keeps every layer's states and
    repeats every layer's previous output (zeros before the first). Returns
    every layer's outputs ``[(B, T, O_j)]`` and the final states, layer by
    layer.
    """
    batch, steps, _ = xs.shape
    depth = len(layers)
    h = [np.zeros((batch, cfg["units"])) for cfg in cfgs]
    carry = [np.zeros((batch, cfg["units"])) for cfg in cfgs]
    c = [np.zeros((batch, cfg["feedback_units"])) for cfg in cfgs]
    outputs = [[] for _ in range(depth)]
    previous = [np.zeros((batch, cfg["units"])) for cfg in cfgs]
    order = range(steps - 1, -1, -1) if go_backwards else range(steps)
    for t in order:
        h_star = np.concatenate(h, -1)
        below = xs[:, t]
        new_h, new_carry, new_c = [], [], []
        for j in range(depth):
            term = scale = None
            if top_down is not None and depth > 1:
                if top_down == "gated":
                    g = sigmoid(
                        below @ stack[j]["gate_kernel"]
                        + h_star @ stack[j]["gate_recurrent_kernel"]
                    )
                else:
                    g = np.ones((batch, depth))
                term, row = 0.0, 0
                for i in range(depth):
                    if i == j:
                        continue
                    size = cfgs[i]["units"]
                    u_ij = stack[j]["top_down_kernel"][row : row + size]
                    term = term + g[:, i : i + 1] * (h[i] @ u_ij)
                    row += size
                if top_down == "gated":
                    scale = g[:, j : j + 1]
            elif top_down == "gated":
                g = sigmoid(
                    below @ stack[j]["gate_kernel"]
                    + h_star @ stack[j]["gate_recurrent_kernel"]
                )
                scale = g[:, j : j + 1]
            cfg = cfgs[j]
            y, h2, carry2, c2, _ = feedback_step(
                layers[j],
                below,
                h[j],
                carry[j],
                c[j] if cfg["feedback_units"] else None,
                cfg,
                term,
                scale,
            )
            new_h.append(h2)
            new_carry.append(carry[j] if carry2 is None else carry2)
            new_c.append(c[j] if c2 is None else c2)
            outputs[j].append(y)
            below = y
        if mask is not None:
            keep = mask[:, t][:, None]
            new_h, new_carry, new_c = (
                [np.where(keep, n, o) for n, o in zip(new, old)]
                for new, old in ((new_h, h), (new_carry, carry), (new_c, c))
            )
            for j in range(depth):
                outputs[j][-1] = np.where(keep, outputs[j][-1], previous[j])
        previous = [o[-1] for o in outputs]
        h, carry, c = new_h, new_carry, new_c
    states = []
    for j, cfg in enumerate(cfgs):
        states.append(h[j])
        if cfg["core"] == "lstm":
            states.append(carry[j])
        if cfg["feedback_units"]:
            states.append(c[j])
    return [np.stack(o, 1) for o in outputs], states
