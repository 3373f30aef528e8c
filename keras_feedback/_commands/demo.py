"""``keras-feedback demo``: a feedback model learns a built-in task, is
exported and runs in its exported forms, all offline.

Trains a ``Feedback`` model on a built-in TFDS task (default: the adding
problem with 100 steps), evaluates it on the test split against the task's
trivial baseline, exports it as a SavedModel and as LiteRT files (float
whole-sequence, float streaming step, int8 streaming step), verifies each
against the Keras model, prints one summary table and saves two figures:
the learning curve and the feedback trace (h, c, α over time) of one test
sequence.
"""

from keras_feedback import _commands

HELP = (
    "Train a feedback model on a built-in task, export it (SavedModel, LiteRT "
    "float and int8), verify the exports and plot what it learned; offline."
)

DEFAULT_TASK = "adding_problem/T100"
TASKS = (
    "adding_problem/T50",
    "adding_problem/T100",
    "adding_problem/T200",
    "adding_problem/T500",
    "copy_memory/delay10",
    "copy_memory/delay50",
    "copy_memory/delay100",
    "copy_memory/delay200",
)
DEFAULT_OUT = "keras_feedback_out"
# Parity bounds of the exports (max |export - keras|). Float exports run the
# same float32 math in another runtime. int8 rounds every activation to 256
# levels at every step and the rounding feeds back through the states, so
# its bound is relative to the largest |keras output| and loose: the bound
# of the export tests for non-residual cells (tests/test_export_matrix.py).
# What int8 costs on the task itself is shown too (its test loss, streamed).
FLOAT_TOLERANCE = 1e-5
INT8_RELATIVE_TOLERANCE = 0.35


def add_arguments(parser):
    parser.add_argument(
        "--task",
        default=DEFAULT_TASK,
        choices=TASKS,
        metavar="TASK",
        help=f"built-in TFDS task to learn: {', '.join(TASKS)} "
        f"(default: {DEFAULT_TASK})",
    )
    parser.add_argument(
        "--steps",
        type=_commands.positive_int,
        default=None,
        help="training steps (default: 2000 for the adding problem, 5000 for "
        "copy memory)",
    )
    parser.add_argument(
        "--qat-steps",
        type=_commands.positive_int,
        default=300,
        help="quantization-aware fine-tuning steps before the int8 export "
        "(default: 300)",
    )
    parser.add_argument(
        "--out",
        default=DEFAULT_OUT,
        help=f"output folder for the exports and figures (default: {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--seed",
        type=_commands.non_negative_int,
        default=0,
        help="random seed (default: 0)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="TFDS data folder (default: OUT/tensorflow_datasets)",
    )
    parser.add_argument(
        "--max-examples",
        type=_commands.positive_int,
        default=None,
        help="use at most this many examples of each split (for quick runs)",
    )


def run(args):
    _commands.output_folder("--out", args.out, create=True)
    if args.data_dir is not None:
        _commands.output_folder("--data-dir", args.data_dir, create=True)
    from keras_feedback._commands import _demo_job

    return _demo_job.run(args)
