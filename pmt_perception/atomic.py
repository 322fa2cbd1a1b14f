"""Atomic file writes: a reader, or a crash mid-write, never sees half a file.

Everything the package writes (checkpoints, configs, exported models, images, reports) goes
through `atomic_path`: write to a temp file in the target's folder, then rename over the
target. The temp file gets ordinary permissions (0666 minus the umask) before the rename,
since mkstemp creates files readable by their owner only.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .stop_signals import STOP_SIGNALS


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temp path next to `path`; on a clean exit it replaces `path`, else it is removed.
    The temp name keeps the target's suffix, so writers that go by extension still work."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # SIGINT / SIGTERM wait while the temp file is created: a stop between its creation and
    # knowing its name left it behind. A stop that came meanwhile raises at the unblock, with
    # `tmp` known, so the `finally` removes the file.
    unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    tmp = None
    try:
        try:
            fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.",
                                            suffix=path.suffix or ".tmp")
            tmp = Path(tmp_name)
            os.close(fd)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def json_ready(value: Any) -> Any:
    """`value` as strict JSON can hold it: NaN / inf -> null, numpy and torch scalars -> Python
    numbers and their arrays -> (nested) lists (anything with `.tolist()`), tuples -> lists,
    keys -> strings."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    plain = isinstance(value, (str, int, float, bool, type(None)))
    if not plain and callable(getattr(value, "tolist", None)):
        value = value.tolist()   # numpy / torch, without importing either here
        if isinstance(value, list):
            return json_ready(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """The package's one JSON writer: `data` through `json_ready`, indented, newline-terminated,
    written atomically. Strict JSON (never NaN), so any reader can parse it."""
    text = json.dumps(json_ready(data), indent=2, allow_nan=False)
    return write_text_atomic(path, text + "\n")
