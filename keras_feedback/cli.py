"""The ``keras-feedback`` command.

Each subcommand is a module with ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``; ``SUBCOMMANDS`` maps the subcommand's name to its
module. Those modules import no TensorFlow at the top, so ``--help`` and
argument errors are immediate; the library is loaded when a command runs.

Exit codes, the same for every command (``keras_feedback._commands``):
0 success; 1 the job ran but its check failed (a missed demo goal, a failed
verification); 2 a usage or input error, reported as one line on stderr that
names the flag, key or path (no traceback unless ``--debug``); 3 an
unexpected error inside keras_feedback (a bug: ``--debug`` shows where).
"""

import argparse
import contextlib
import importlib
import os
import sys
import tempfile

from keras_feedback import _commands
from keras_feedback.version import __version__

SUBCOMMANDS = {
    "export": "keras_feedback._commands.export",
    "demo": "keras_feedback._commands.demo",
    "train": "keras_feedback._commands.train",
    "diagnose": "keras_feedback._commands.diagnose",
}
EPILOG = (
    "exit codes: 0 success; 1 the job ran but its check failed (a missed "
    "goal, a failed verification); 2 usage or input error; 3 internal error."
)


class _Parser(argparse.ArgumentParser):
    """Reports a usage error as one line on stderr, exit status 2."""

    def error(self, message):
        self.exit(
            _commands.EXIT_USAGE,
            f"{self.prog}: error: {_commands.one_line(message)} "
            f"(see {self.prog} --help)\n",
        )


def _common_options(suppress):
    """--debug and --verbose, accepted before and after the command's name."""
    parser = argparse.ArgumentParser(add_help=False)
    default = argparse.SUPPRESS if suppress else False
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="show the traceback of an error (and every log)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        default=default,
        help="show TensorFlow's and the LiteRT converter's own logs on stderr",
    )
    return parser


def build_parser():
    parser = _Parser(
        prog="keras-feedback",
        description=(
            "Feedback-recurrent layers for Keras 3: train, export and verify "
            "feedback models."
        ),
        epilog=EPILOG,
        parents=[_common_options(suppress=False)],
    )
    parser.add_argument(
        "--version", action="version", version=f"keras-feedback {__version__}"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub_parser = sub.add_parser(
            name,
            help=module.HELP,
            description=module.HELP,
            epilog=EPILOG,
            parents=[_common_options(suppress=True)],
        )
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(run=module.run)
    return parser


@contextlib.contextmanager
def _quiet_native_stderr():
    """Sends what TensorFlow's and the converter's C++ code write to file
    descriptor 2 (and Python's own stderr) to a discarded file."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return _commands.EXIT_OK
    prog = f"keras-feedback {args.command}"
    quiet = not (args.verbose or args.debug)
    if quiet:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    message = None
    with _quiet_native_stderr() if quiet else contextlib.nullcontext():
        try:
            import keras_feedback

            try:
                keras_feedback._load()
            except ImportError as error:  # the environment: not our bug
                raise _commands.UsageError(
                    f"cannot load keras_feedback: {error}"
                ) from error
            code = int(args.run(args) or 0)
        except KeyboardInterrupt:
            message, code = "interrupted", 130
        except (_commands.UsageError, ValueError, TypeError, OSError) as error:
            if args.debug:
                raise
            message, code = _commands.one_line(error), _commands.EXIT_USAGE
        except Exception as error:
            if args.debug:
                raise
            message = (
                f"internal error: {type(error).__name__}: "
                f"{_commands.one_line(error, 300)} (a bug of keras_feedback: "
                "rerun with --debug for the traceback and please report it)"
            )
            code = _commands.EXIT_BUG
    if message is not None:
        print(f"{prog}: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
