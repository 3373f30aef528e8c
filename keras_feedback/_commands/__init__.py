"""Modules of the ``keras-feedback`` subcommands (see ``keras_feedback.cli``).

What every command shares: the exit codes, the user error that becomes one
line on stderr, and the checks of arguments and paths that ``argparse`` and
the commands run before any work starts. Nothing here imports TensorFlow
(``keras-feedback COMMAND --help`` must not).
"""

import argparse
import contextlib
import math
import os

EXIT_OK = 0  # the command did its job
EXIT_CHECK_FAILED = 1  # it ran, but its check failed (a verification, a goal)
EXIT_USAGE = 2  # usage or input error: nothing was done, or it was undone
EXIT_BUG = 3  # an unexpected error inside keras_feedback (please report it)


class UsageError(Exception):
    """A user error: the command prints it as one line on stderr, exit 2.

    The message names the flag, key or path at fault and what was expected.
    """


def one_line(message, limit=600):
    """``message`` on one line (whitespace runs collapsed), at most ``limit``
    characters."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _number(text, kind):
    try:
        return kind(text)
    except ValueError:
        name = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None


def positive_int(text):
    """``argparse`` type: an integer >= 1."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text):
    """``argparse`` type: an integer >= 0."""
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"expected a non-negative integer, got {text!r}"
        )
    return value


def positive_float(text):
    """``argparse`` type: a finite number > 0."""
    value = _number(text, float)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"expected a finite positive number, got {text!r}"
        )
    return value


def fraction(text):
    """``argparse`` type: a number strictly between 0 and 1."""
    value = _number(text, float)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a fraction between 0 and 1 (exclusive), got {text!r}"
        )
    return value


def _blocking_file(path):
    """The first existing ancestor of ``path`` that is not a folder, if any."""
    current = os.path.abspath(path)
    while True:
        parent = os.path.dirname(current)
        if parent == current:
            return None
        if os.path.exists(parent):
            return None if os.path.isdir(parent) else parent
        current = parent


def output_folder(flag, path, create=False):
    """Checks that ``path`` can be (or is) a folder the command writes into.

    Raises ``UsageError`` naming ``flag`` when the path is a file or lies under
    one, or (``create=True``) when the folder cannot be created.
    """
    blocker = _blocking_file(path)
    if blocker is not None:
        raise UsageError(
            f"{flag} {path!r}: {blocker!r} is a file, so no folder can be made "
            "under it; expected a folder path"
        )
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{flag} {path!r} is a file; expected a folder path")
    if create:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as error:
            raise UsageError(
                f"{flag} {path!r}: cannot create the folder: {error}"
            ) from None
        if not os.access(path, os.W_OK):
            raise UsageError(f"{flag} {path!r}: the folder is not writable")
    return path


def output_file(flag, path):
    """Checks that the file ``path`` can be written: its folder is not under a
    file and ``path`` is not a folder. Raises ``UsageError`` naming ``flag``."""
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path!r} is a folder; expected a file path")
    folder = os.path.dirname(os.path.abspath(path))
    blocker = folder if os.path.isfile(folder) else _blocking_file(folder)
    if blocker is not None:
        raise UsageError(
            f"{flag} {path!r}: {blocker!r} is a file, so no file can be made "
            "under it; expected a path in a folder"
        )
    if os.path.isdir(folder) and not os.access(folder, os.W_OK):
        raise UsageError(f"{flag} {path!r}: the folder {folder!r} is not writable")
    return path


def input_file(flag, path):
    """Checks that ``path`` is an existing file. Raises ``UsageError``."""
    if not os.path.exists(path):
        raise UsageError(f"{flag}: no file at {path!r}")
    if not os.path.isfile(path):
        raise UsageError(f"{flag}: {path!r} is not a file")
    return path


def load_arrays(flag, path):
    """The array of the ``.npy`` file at ``path``, or a dict of the arrays
    of the ``.npz`` file (all read now), or ``UsageError`` naming ``flag``
    when it is missing, empty, corrupt or not numeric data."""
    import zipfile
    import zlib

    import numpy as np

    input_file(flag, path)
    if not os.path.getsize(path):
        raise UsageError(f"{flag} {path!r}: the file is empty; expected a .npy or .npz")
    try:
        loaded = np.load(path)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                loaded = {name: loaded[name] for name in loaded.files}
            if not loaded:
                raise ValueError("the archive holds no array")
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise UsageError(
            f"{flag} {path!r}: not a readable .npy or .npz file "
            f"({type(error).__name__}: {one_line(error, 200)})"
        ) from None
    return loaded


@contextlib.contextmanager
def flags_for(arguments):
    """Errors of a library call inside the block name the command's flags.

    ``arguments`` maps the library's argument names to flags
    (``{"name": "--dataset"}``): a ``ValueError`` or ``TypeError`` saying
    "Argument `name`" becomes a ``UsageError`` saying "--dataset".
    """
    try:
        yield
    except (ValueError, TypeError) as error:
        message = str(error)
        named = False
        for argument, flag in arguments.items():
            for form in (f"Argument `{argument}`", f"`{argument}`"):
                if form in message:
                    message = message.replace(form, flag)
                    named = True
        if not named:
            raise
        raise UsageError(message) from None


def load_keras_model(flag, path, compile=True):
    """The Keras model saved at ``path``, or ``UsageError`` naming ``flag``
    when the file is missing or is not a loadable ``.keras`` model."""
    input_file(flag, path)
    import keras

    import keras_feedback  # noqa: F401 - registers the layers for loading

    if not os.path.getsize(path):
        raise UsageError(f"{flag} {path!r}: the file is empty; expected a .keras model")
    import zipfile

    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        raise UsageError(
            f"{flag} {path!r}: not a loadable .keras model (a .keras file is a "
            "zip archive, as model.save('model.keras') writes; this one is not)"
        )
    try:
        return keras.saving.load_model(path, compile=compile)
    except Exception as error:  # a corrupt or foreign file: many error types
        raise UsageError(
            f"{flag} {path!r}: not a loadable .keras model "
            f"({type(error).__name__}: {one_line(error, 200)})"
        ) from None
