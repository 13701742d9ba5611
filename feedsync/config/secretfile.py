"""Reading a secret from a file (``password_file``, ``api_key_file``).

The file must be a regular file that is itself no symbolic link, of at most
``MAX_BYTES``: a FIFO used to hang ``check`` forever, ``/dev/zero`` was read
until MemoryError, and a link to ``/etc/shadow`` was followed without a word.
systemd credentials (``$CREDENTIALS_DIRECTORY/NAME``) are regular files and
read as any other.
"""

from __future__ import annotations

import errno
import os
import stat

from feedsync.errors import ConfigError

MAX_BYTES = 64 * 1024
# O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def read(key: str, path: str) -> tuple[str, int]:
    """The secret in the file at ``path`` (stripped) and the file's mode; a
    ConfigError naming ``key`` and ``path`` when it is no small regular file."""
    try:
        fd = os.open(path, _FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP and os.path.islink(path):
            message = f"{path} is a symbolic link; name the file itself"
            raise ConfigError(key, message) from None
        raise ConfigError(key, f"cannot read {path}: {exc}") from None
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise ConfigError(key, f"{path} is {_kind(status.st_mode)}, not a regular file")
        if status.st_size > MAX_BYTES:
            raise ConfigError(key, f"{path} is over {MAX_BYTES // 1024} KiB: not a secret")
        data = _read_at_most(fd, MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:  # it grew since fstat, or its size is not what it holds
        raise ConfigError(key, f"{path} is over {MAX_BYTES // 1024} KiB: not a secret")
    try:
        value = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        # The decoder's own message quotes bytes of the secret.
        raise ConfigError(key, f"cannot read {path}: not UTF-8 text") from None
    if not value:
        raise ConfigError(key, f"{path} is empty")
    return value, status.st_mode


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "a special file")
