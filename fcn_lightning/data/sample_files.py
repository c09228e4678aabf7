"""One sample file's bytes, and the error that names it (a line that survives DataLoader
workers). Shared by the image, PNG label and SBD label readers."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from fcn_lightning.errors import DataError


class SampleError(DataError):
    """A bad file met while loading; keeps its one line across DataLoader workers.

    A worker's exception reaches the main process rebuilt from the worker's formatted
    traceback ("Caught SampleError in DataLoader worker process 0. Original Traceback
    ..."); this class takes back the original line so users see the file and the fix.
    """

    def __init__(self, message: str = ""):
        if message.startswith("Caught ") and "Original Traceback" in message:
            last = message.rstrip().splitlines()[-1]
            prefix = f"{type(self).__module__}.{type(self).__qualname__}: "
            message = last.removeprefix(prefix)
        super().__init__(message)


def unusable_path(path: Path) -> str | None:
    """Why `path` is no file to read ("missing", "a directory", ...), or None if it is one."""
    if path.is_file():
        return None
    if path.is_dir():
        return "a directory, not a file"
    if path.is_symlink():
        target = os.readlink(path)
        try:
            path.stat()
        except OSError as err:
            if err.errno == errno.ELOOP:
                return f"a symbolic link that loops (to {target})"
            return f"a symbolic link to {target}, which does not exist"
        return f"a symbolic link to {target}, which is not a file"
    return "missing" if not path.exists() else "not a regular file"


def read_bytes(path: Path, what: str) -> bytes:
    """The bytes of the `what` ("image", "label") file at `path`, never empty."""
    try:
        data = path.read_bytes()
    except OSError as err:
        why = unusable_path(path)
        if why is None:
            why = f"unreadable ({err.strerror or err})"
        raise SampleError(f"{path}: {what} file is {why}: {_fix(what)}") from None
    if not data:
        raise SampleError(f"{path}: {what} file is empty: {_fix(what)}")
    return data


def _fix(what: str) -> str:
    return f"put the {what} file there (from the original archive)"


def reason(err: Exception) -> str:
    """A decoder's message without torchvision's C++ source location."""
    lines = str(err).strip().splitlines() or [type(err).__name__]
    return re.sub(r"^\S+, \S+:\d+, ", "", lines[-1])
