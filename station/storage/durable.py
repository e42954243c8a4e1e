"""The one way the station writes a state file: whole, or not at all, even across a power cut.

A rename alone is not enough. Without an fsync of the file, a cut after the rename leaves the new
name pointing at a 0-byte file (its data never left the page cache); without an fsync of the
directory, the rename itself may be lost, so an answer the station already gave (an accepted
firmware request, a switched certificate) is forgotten. The sequence here is the one journaled file
systems guarantee: write a temp file in the same directory, flush, fsync, rename over the target,
fsync the directory.

Temp names are unpredictable and created with O_EXCL|O_NOFOLLOW, so a planted link or file in a
shared directory is never written through. Standard library only: root-side code imports this.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["durable_write", "durable_write_text", "durable_writer", "durable_append", "durable_directory",
           "durable_symlink", "durable_remove_directory", "durable_unlink", "fsync_directory", "temp_name"]


def temp_name(name: str) -> str:
    """An unpredictable hidden temp name beside `name` (never guessable by another user)."""
    return f".{name}.{secrets.token_hex(8)}.tmp"


def fsync_directory(directory: Path | str | int) -> None:
    """Make a rename, creation or unlink in `directory` (a path or an open directory fd) durable."""
    if isinstance(directory, int):
        os.fsync(directory)
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_write(path: Path | str, data: bytes, *, mode: int = 0o644,
                  owner: tuple[int, int] | None = None) -> None:
    """Replace `path` with `data` atomically and durably.

    The temp file gets its mode (and owner, when given) on the open descriptor before any byte is
    written, so a secret is never readable by others, not even for an instant.
    """
    with durable_writer(path, mode=mode, owner=owner) as handle:
        handle.write(data)


def durable_write_text(path: Path | str, text: str, *, mode: int = 0o644,
                       owner: tuple[int, int] | None = None) -> None:
    durable_write(path, text.encode("utf-8"), mode=mode, owner=owner)


@contextlib.contextmanager
def durable_writer(path: Path | str, *, mode: int = 0o644,
                   owner: tuple[int, int] | None = None) -> Iterator[BinaryIO]:
    """`durable_write` for data streamed in pieces (a firmware download): yields a binary file on a
    temp name; when the block ends without an exception, it is fsynced, renamed over `path` and the
    directory fsynced. On an exception the temp file is removed and `path` is untouched."""
    path = Path(path)
    directory = path.parent
    tmp = directory / temp_name(path.name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have narrowed it
            if owner is not None:
                os.fchown(fd, *owner)
            file = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            raise
        with file as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(directory)


def durable_unlink(path: Path | str) -> None:
    """Remove `path` so that it stays removed after a cut (a finished job must not come back and
    run again); no error when it is already gone."""
    path = Path(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    fsync_directory(path.parent)


def durable_append(path: Path | str, data: bytes, *, mode: int = 0o644) -> None:
    """Append `data` (e.g. one history line) and fsync it before returning.

    A cut may leave a torn last line (readers skip a line that does not parse); it never loses a line
    this call returned for. Creating the file also fsyncs the directory so the file itself survives.
    """
    path = Path(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
        created = False
    except FileNotFoundError:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, mode)
        created = True
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_directory(path.parent)


def durable_directory(path: Path | str, files: dict[str, tuple[bytes, int]], *, mode: int = 0o700) -> None:
    """Create directory `path` holding `files` (name -> (data, mode)) whole, or not at all.

    The files are written and fsynced in a temp directory beside `path`, which is fsynced and then
    renamed to `path` (which must not exist yet, or be an empty directory), and the parent fsynced: after a cut at any
    instant `path` is either absent or complete. For a set of files that must change together
    (a key and its certificate), one directory per version and `durable_symlink` to pick one.
    """
    path = Path(path)
    tmp = path.parent / temp_name(path.name)
    os.mkdir(tmp, mode)
    try:
        os.chmod(tmp, mode)
        for name, (data, file_mode) in files.items():
            durable_write(tmp / name, data, mode=file_mode)  # each fsynced, and the temp directory
        os.rename(tmp, path)  # a non-empty `path` is an error (ENOTEMPTY), never overwritten
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_directory(path.parent)


def durable_symlink(link: Path | str, target: str) -> None:
    """Point symlink `link` at `target` in one atomic, durable step (a temp link renamed over it)."""
    link = Path(link)
    tmp = link.parent / temp_name(link.name)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(link.parent)


def durable_remove_directory(path: Path | str) -> None:
    """Remove directory `path` and its contents so that a cut never leaves it half there under its name:
    it is first renamed to a temp name (durably), then deleted; a leftover temp is only garbage."""
    path = Path(path)
    gone = path.parent / temp_name(path.name)
    try:
        os.rename(path, gone)
    except FileNotFoundError:
        return
    fsync_directory(path.parent)
    shutil.rmtree(gone, ignore_errors=True)
