"""Write a cache file so that no reader ever sees half of it, and no failure leaves litter."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> bool:
    """Create ``path``'s directory, ``write`` into a temporary file beside it and rename it
    to ``path`` (atomic on POSIX). On any OSError the temporary file is removed and False
    returned: callers treat a failed write as a cache miss next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    except OSError:
        return False
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return False
    return True
