"""The ``keras-feedback`` command.

Subcommands register themselves in ``COMMANDS``; the command imports
TensorFlow only when a subcommand runs, so ``--help`` and ``--version`` are
instant.
"""

import argparse
import sys

from keras_feedback.version import __version__

# name -> (help, add_arguments(parser), run(args) -> exit code); the modules
# that implement them are imported lazily by ``run``.
COMMANDS = {}


def command(name, help):
    """Registers ``add_arguments`` as the parser of subcommand ``name``.

    The decorated function fills the subparser and returns the callable that
    runs the command.
    """

    def decorator(add_arguments):
        COMMANDS[name] = (help, add_arguments)
        return add_arguments

    return decorator


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-feedback",
        description=(
            "Feedback-recurrent layers for Keras 3: train, export and verify "
            "feedback models."
        ),
    )
    parser.add_argument(
        "--version", action="version", version=f"keras-feedback {__version__}"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_arguments) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(run=add_arguments(sub_parser))
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
