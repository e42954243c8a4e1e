"""File operations for code that runs as root in directories another user controls.

Root-side tools (station-update, station-firstboot, station-migrate-csms, `sudo station report`)
read and write in the `station` user's state directory, and that user can put symlinks, hard
links, FIFOs or files of its own there at any moment. A path opened by name is a path the other
user chooses. So every operation here works relative to a directory descriptor:

- a directory is reached component by component with O_NOFOLLOW | O_DIRECTORY; a symlink on the
  way is followed only when the directory holding it is root's (or ours) and writable by nobody
  else (``/var/run -> /run`` is fine, a link in the station's directory is refused);
- files are opened with O_NOFOLLOW | O_NONBLOCK and checked with fstat: regular, one link, and at
  most the size the caller expects (a FIFO would block root, a device would be read, a hard link
  would be another file);
- new files get an unpredictable name, O_CREAT | O_EXCL, their mode and owner on the open
  descriptor (fchmod/fchown, never chown by path), fsync, renameat over the target, fsync of the
  directory (`station.storage.durable`'s sequence, here relative to a descriptor).

Standard library only: root-side code imports this and nothing of the daemon's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from station.storage.durable import fsync_directory, temp_name

__all__ = ["UnsafeFile", "SafeDir", "open_dir", "read_bytes", "DEFAULT_READ_LIMIT"]

DEFAULT_READ_LIMIT = 16 * 1024 * 1024
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW
_MAX_LINKS = 16


class UnsafeFile(OSError):
    """A path that cannot be used safely (a link, a FIFO, a hard link, too large, not a directory)."""


def _trusted_holder(dir_fd: int) -> bool:
    """May a symlink inside this directory be followed? Only if no other user could have put it there."""
    info = os.fstat(dir_fd)
    return info.st_uid in (0, os.geteuid()) and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _walk(path: Path, make: int | None, owner: tuple[int, int] | None) -> int:
    """A descriptor of directory `path` (absolute), reached without following untrusted links."""
    pending = list(Path(os.path.abspath(path)).parts[1:])
    fd = os.open("/", _DIR_FLAGS)
    resolved: list[str] = []
    links = 0
    try:
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":  # only from a trusted link's target (abspath removed the caller's)
                resolved = resolved[:-1]
                os.close(fd)
                fd = os.open("/", _DIR_FLAGS)
                pending[:0] = resolved
                resolved = []
                continue
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if make is None:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, make, dir_fd=fd)
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                if owner is not None:
                    os.fchown(child, *owner)
            except OSError as exc:
                info = os.stat(part, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISLNK(info.st_mode):
                    raise UnsafeFile(f"{path}: {part!r} is not a directory ({exc.strerror})") from None
                if not _trusted_holder(fd) or links >= _MAX_LINKS:
                    raise UnsafeFile(f"{path}: {part!r} is a symlink in a directory another user can write") from None
                links += 1
                target = os.readlink(part, dir_fd=fd)
                if target.startswith("/"):
                    os.close(fd)
                    fd = os.open("/", _DIR_FLAGS)
                    resolved = []
                pending[:0] = [p for p in Path(target).parts if p != "/"]
                continue
            os.close(fd)
            fd = child
            resolved.append(part)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_regular(fd: int, name: str, limit: int | None) -> os.stat_result:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeFile(f"{name} is not a regular file")
    if info.st_nlink != 1:
        raise UnsafeFile(f"{name} has {info.st_nlink} hard links")
    if limit is not None and info.st_size > limit:
        raise UnsafeFile(f"{name} is larger than {limit} bytes")
    return info


def _set_mode(fd: int, mode: int, owner: tuple[int, int] | None) -> None:
    """Mode and owner set on the descriptor (never by path)."""
    os.fchmod(fd, mode)
    if owner is not None:
        os.fchown(fd, *owner)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class SafeDir:
    """An open directory; every method names a file *in* it (a plain name, no slash)."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path

    # -- housekeeping
    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> SafeDir:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def owner(self) -> tuple[int, int]:
        """(uid, gid) of the directory: whom root hands a file it writes here for the daemon."""
        info = os.fstat(self.fd)
        return info.st_uid, info.st_gid

    @staticmethod
    def _name(name: str) -> str:
        if not name or "/" in name or name in (".", ".."):
            raise UnsafeFile(f"{name!r} is not a plain file name")
        return name

    def lstat(self, name: str) -> os.stat_result | None:
        """The entry itself (a link is not followed); None when there is none."""
        try:
            return os.stat(self._name(name), dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def listdir(self) -> list[str]:
        return os.listdir(self.fd)

    # -- reading
    def open_read(self, name: str, limit: int | None = DEFAULT_READ_LIMIT) -> BinaryIO:
        """A regular file (no link, FIFO, device or hard link; at most `limit` bytes), opened for reading."""
        try:
            fd = os.open(self._name(name), os.O_RDONLY | os.O_NONBLOCK | _NOFOLLOW, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO):
                raise UnsafeFile(exc.errno, f"{name}: not a plain file") from None
            raise
        try:
            _check_regular(fd, name, limit)
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return os.fdopen(fd, "rb")

    def read_bytes(self, name: str, limit: int = DEFAULT_READ_LIMIT) -> bytes:
        with self.open_read(name, limit) as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise UnsafeFile(f"{name} grew beyond {limit} bytes")
        return data

    def read_text(self, name: str, limit: int = DEFAULT_READ_LIMIT) -> str:
        return self.read_bytes(name, limit).decode("utf-8")

    # -- writing
    @contextlib.contextmanager
    def writer(self, name: str, *, mode: int = 0o644, owner: tuple[int, int] | None = None) -> Iterator[BinaryIO]:
        """A new file under an unpredictable temp name; renamed over `name` (durably) when the block
        ends without an exception, removed otherwise. Mode and owner are set before any byte."""
        self._name(name)
        tmp = temp_name(name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, mode, dir_fd=self.fd)
        try:
            _set_mode(fd, mode, owner)
            with os.fdopen(fd, "wb", closefd=False) as handle:
                yield handle
                handle.flush()
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=self.fd)
            raise
        os.close(fd)
        self._rename_into_place(tmp, name)

    def replace(self, name: str, data: bytes | str, *, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
        """Replace `name` with `data`, whole or not at all (a link there is replaced, never followed)."""
        with self.writer(name, mode=mode, owner=owner) as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)

    def append(self, name: str, data: bytes | str, *, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
        """Append and fsync; a new file is created with O_EXCL, its mode and owner set on the descriptor."""
        payload = data.encode("utf-8") if isinstance(data, str) else data
        flags = os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | _NOFOLLOW
        created = False
        try:
            fd = os.open(self._name(name), flags, dir_fd=self.fd)
        except FileNotFoundError:
            fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, mode, dir_fd=self.fd)
            created = True
        except OSError as exc:
            raise UnsafeFile(exc.errno, f"{name}: not a plain file ({exc.strerror})") from None
        try:
            _check_regular(fd, name, None)
            if created:
                _set_mode(fd, mode, owner)
            _write_all(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_directory(self.fd)

    def scratch(self) -> BinaryIO:
        """A nameless read-write file in this directory (gone when closed): for data built in steps."""
        try:
            fd = os.open(".", os.O_RDWR | os.O_TMPFILE | os.O_CLOEXEC, 0o600, dir_fd=self.fd)
        except (AttributeError, OSError):
            tmp = temp_name("scratch")
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600, dir_fd=self.fd)
            os.unlink(tmp, dir_fd=self.fd)
        return os.fdopen(fd, "w+b")

    # -- directory entries
    def mkdir(self, name: str, *, mode: int = 0o755, owner: tuple[int, int] | None = None) -> SafeDir:
        """The subdirectory `name`, created (mode and owner on its descriptor) when missing; never a link."""
        created = False
        try:
            os.mkdir(self._name(name), mode, dir_fd=self.fd)
            created = True
        except FileExistsError:
            pass
        child = self.subdir(name)
        if created:
            _set_mode(child.fd, mode, owner)
            fsync_directory(self.fd)
        return child

    def subdir(self, name: str) -> SafeDir:
        """An existing subdirectory (a link there is refused)."""
        try:
            fd = os.open(self._name(name), _DIR_FLAGS, dir_fd=self.fd)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise UnsafeFile(exc.errno, f"{name}: not a plain directory ({exc.strerror})") from None
        return SafeDir(fd, self.path / name)

    def replace_symlink(self, name: str, target: str) -> None:
        """Make `name` a symbolic link to `target` atomically: a new link renamed over whatever is there."""
        self._name(name)
        tmp = temp_name(name)
        os.symlink(target, tmp, dir_fd=self.fd)
        self._rename_into_place(tmp, name)

    def _rename_into_place(self, tmp: str, name: str) -> None:
        """Rename the finished `tmp` over `name` and fsync the directory; on failure `tmp` is removed."""
        try:
            os.rename(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=self.fd)
            raise
        fsync_directory(self.fd)

    def rmtree(self, name: str) -> None:
        """Remove the directory tree `name` (nothing when missing). Descriptor-relative throughout
        (shutil's fd-based walk): a link inside is removed, never followed; a link at `name` is refused."""
        try:
            shutil.rmtree(self._name(name), dir_fd=self.fd)
        except FileNotFoundError:
            return
        fsync_directory(self.fd)

    def unlink(self, name: str, *, missing_ok: bool = True) -> None:
        """Remove the entry `name` itself (a link is removed, its target untouched)."""
        try:
            os.unlink(self._name(name), dir_fd=self.fd)
        except FileNotFoundError:
            if not missing_ok:
                raise
            return
        fsync_directory(self.fd)


def open_dir(path: Path | str, *, make: int | None = None, owner: tuple[int, int] | None = None) -> SafeDir:
    """Open directory `path` safely; with `make` (a mode), missing components are created (with `owner`)."""
    path = Path(path)
    return SafeDir(_walk(path, make, owner), Path(os.path.abspath(path)))


def read_bytes(path: Path | str, limit: int = DEFAULT_READ_LIMIT) -> bytes:
    """A regular file's bytes, reached safely (see `SafeDir.open_read`)."""
    path = Path(path)
    with open_dir(path.parent) as directory:
        return directory.read_bytes(path.name, limit)
