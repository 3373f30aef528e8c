"""Modules of the ``keras-feedback`` subcommands (see ``keras_feedback.cli``)."""
