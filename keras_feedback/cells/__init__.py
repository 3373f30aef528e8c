"""Step math of the cells: pure functions of (params, inputs, state).

Internal: the public cell classes live in ``keras_feedback.layers``.
"""
