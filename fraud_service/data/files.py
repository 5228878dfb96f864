"""Files an operator hands the service (a dataset's tables, an evidence bundle, shipped checkpoints): only regular
files are read. A symbolic link is not followed (it may lead anywhere, or nowhere), and a special file (a FIFO,
/dev/zero) is never opened: reading one hangs or never ends."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def not_regular(path: Path) -> str | None:
    """Why PATH is not read (it is a symbolic link, or not a regular file, or missing), or None when it may be."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return "does not exist"
    if stat.S_ISLNK(mode):
        return f"is a symbolic link (to {os.readlink(path)})"
    if not stat.S_ISREG(mode):
        return "is not a regular file"
    return None
