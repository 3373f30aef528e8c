"""Atomic replacement of an export (a version folder or a file), and the
clean-up of what a killed export left behind.

A version folder is written in full under a staging name beside it, then
swapped in: on Linux with one ``renameat2(RENAME_EXCHANGE)``, which exchanges
the two names in one step, so ``<base>/<version>`` is at every instant the
complete old or the complete new version; the old one, now under the staging
name, is removed after. Elsewhere (or on a file system without the
exchange) the old folder is first renamed aside to a trash name, then the
staging folder renamed in, then the trash removed; a kill between the two
renames leaves the old version under the trash name, and the next export
renames it back before anything else.

Staging and trash names start with a dot and hold no digits-only name (TF
Serving loads only numeric folders, so it never sees them) and carry the id
of the process that made them: the next export removes those whose process
is gone, and leaves alone those of an export still running.
"""

import ctypes
import errno
import os
import re
import shutil
import tempfile

_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>partial|old)-(?P<pid>\d+)-[^.]*")
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _alive(pid):
    """Whether process ``pid`` runs (on this machine)."""
    if pid == os.getpid():
        return True
    if os.name != "posix":
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _leftovers(directory):
    """``(path, name, kind)`` of the staging and trash entries of dead exports."""
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for entry in sorted(entries):
        match = _LEFTOVER.fullmatch(entry.removesuffix(".tflite"))
        if match and not _alive(int(match["pid"])):
            found.append((os.path.join(directory, entry), match["name"], match["kind"]))
    return found


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def clean(directory):
    """Recovers and removes what killed exports left in ``directory``.

    A trash folder whose version folder is missing is the complete old
    version (a kill between the two renames of the fallback swap): it is
    renamed back. Every other staging or trash entry of a process that is
    gone is removed.
    """
    for path, name, kind in _leftovers(directory):
        target = os.path.join(directory, name)
        if kind == "old" and not os.path.lexists(target):
            os.rename(path, target)
    for path, _, _ in _leftovers(directory):
        _remove(path)


def staging_folder(directory, name):
    """A new, empty staging folder for ``<directory>/<name>``."""
    return tempfile.mkdtemp(prefix=f".{name}.partial-{os.getpid()}-", dir=directory)


def staging_file(directory, name):
    """``(fd, path)`` of a new staging file for ``<directory>/<name>``."""
    stem, suffix = os.path.splitext(name)
    return tempfile.mkstemp(
        prefix=f".{stem}.partial-{os.getpid()}-", suffix=suffix, dir=directory
    )


def _exchange(first, second):
    """Exchanges two paths in one step; False where the system cannot."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), first, None, second)


def swap_folder(staging, target):
    """Puts the complete folder ``staging`` at ``target``; see the module."""
    if not os.path.lexists(target):
        os.rename(staging, target)
        return
    if _exchange(staging, target):
        _remove(staging)
        return
    directory, name = os.path.split(target)
    trash = tempfile.mkdtemp(prefix=f".{name}.old-{os.getpid()}-", dir=directory)
    os.rmdir(trash)
    os.rename(target, trash)
    os.rename(staging, target)
    _remove(trash)


def write_file(path, content):
    """Writes ``content`` to ``path`` through a staging file and one rename."""
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    clean(directory)
    fd, partial = staging_file(directory, name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
