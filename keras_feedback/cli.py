"""The ``keras-feedback`` command.

Each subcommand is a module with ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``; ``SUBCOMMANDS`` maps the subcommand's name to its
module, imported only when the parser is built.
"""

import argparse
import importlib
import sys

from keras_feedback.version import __version__

SUBCOMMANDS = {
    "export": "keras_feedback._commands.export",
    "demo": "keras_feedback._commands.demo",
    "train": "keras_feedback._commands.train",
    "diagnose": "keras_feedback._commands.diagnose",
}


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
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub_parser = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(run=module.run)
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
