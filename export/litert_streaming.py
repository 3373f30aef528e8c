"""On-device streaming with a LiteRT step model, in Python (``ai_edge_litert``).

A step model comes from ``keras_feedback.export.export_litert(model, path,
streaming=True)`` (or ``keras-feedback export ... --litert FILE --streaming``).
It is a pure function: one time step ``x`` and the states go in, the output
``y`` and the new states come out; the device keeps the states between steps.

    python export/litert_streaming.py feedback_step.tflite [SEQUENCE.npy]

streams SEQUENCE (``(time, features)``; default: 5 random steps) through the
model one step at a time and prints each step's output.
"""

import sys

import numpy as np
from ai_edge_litert.interpreter import Interpreter


def _step_io(interpreter):
    # The runner must not outlive this call: resizing needs no live views.
    runner = interpreter.get_signature_runner("step")
    return runner.get_input_details(), runner.get_output_details()


class Stream:
    """Runs a LiteRT step model one time step at a time, holding the states.

    Args:
        path: the ``.tflite`` step model (signature ``"step"``).
        batch_size: how many streams run side by side.
    """

    def __init__(self, path, batch_size=1):
        self.interpreter = Interpreter(model_path=path)
        self.inputs, self.outputs = _step_io(self.interpreter)
        # A state is what goes in and comes back out under the same name.
        self.state_names = [name for name in self.inputs if name in self.outputs]
        self.input_names = [n for n in self.inputs if n not in self.state_names]
        self.output_names = [n for n in self.outputs if n not in self.state_names]
        self.batch_size = batch_size
        for detail in self.inputs.values():
            shape = list(detail["shape_signature"])
            shape[0] = batch_size
            self.interpreter.resize_tensor_input(detail["index"], shape)
        self.interpreter.allocate_tensors()
        self.reset()

    def reset(self, states=None):
        """Starts new streams: every state back to zeros, or to ``states``.

        Args:
            states: None, or a dict by state name of ``(batch_size, size)``
                arrays: the SavedModel's ``initial_state`` response, for a
                model whose stateful layers held states when exported.
        """
        self.states = {
            name: np.zeros(
                (self.batch_size, self.inputs[name]["shape_signature"][-1]),
                self.inputs[name]["dtype"],
            )
            for name in self.state_names
        }
        for name, value in (states or {}).items():
            if name not in self.states:
                raise ValueError(
                    f"Argument `states`: {name!r} is not a state of this model "
                    f"({self.state_names})"
                )
            self.states[name] = np.asarray(value, self.inputs[name]["dtype"])

    def __call__(self, x):
        """Feeds one time step; returns the output (a dict when several).

        Args:
            x: ``(batch_size, features)`` (a dict by input name when the
                model has several inputs).
        """
        feed = x if isinstance(x, dict) else {self.input_names[0]: x}
        for name, value in {**feed, **self.states}.items():
            detail = self.inputs[name]
            self.interpreter.set_tensor(
                detail["index"], np.asarray(value, detail["dtype"])
            )
        self.interpreter.invoke()
        result = {
            name: self.interpreter.get_tensor(detail["index"])
            for name, detail in self.outputs.items()
        }
        self.states = {name: result[name] for name in self.state_names}
        outputs = {name: result[name] for name in self.output_names}
        return outputs if len(outputs) > 1 else outputs[self.output_names[0]]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__)
        return 2
    stream = Stream(argv[0])
    if len(argv) > 1:
        sequence = np.load(argv[1])
    else:
        features = stream.inputs[stream.input_names[0]]["shape_signature"][-1]
        sequence = np.random.default_rng(0).normal(size=(5, features))
    for t, x_t in enumerate(sequence):
        y_t = stream(np.asarray(x_t, np.float32)[None])
        print(t, np.array2string(np.asarray(y_t)[0], precision=5))
    return 0


if __name__ == "__main__":
    sys.exit(main())
