"""`station run` validates the configuration, then becomes the daemon by exec, settings handed over.

Why: the configuration is read with pydantic-settings (flags > environment > env file >
defaults, one validation, one error report), but pydantic, pydantic-core, pydantic-settings
and python-dotenv stay resident for the life of the process: ~14 MB of a Raspberry Pi's
memory (docs/performance.md) for something the daemon needs in its first 200 ms. So the
`station run` process loads and validates the settings as before, writes the validated
values into a pipe and exec()s `python -m station.handover`: same PID (systemd, the
notify socket and the watchdog see one process), a fresh interpreter that imports the
daemon only. Secrets travel through the pipe, never through argv or the environment.

If exec is impossible, the daemon runs in the `station run` process as before.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path, PurePath
from typing import Any

FD_FLAG = "--settings-fd"
DERIVED = ("db_path", "api_host", "api_port")
"""Properties of `Settings` the daemon reads: computed by the model, handed over as values."""
MAX_PAYLOAD = 60_000
"""Stay below the pipe's buffer (64 KiB on Linux): the payload is written before anyone reads it."""


class Secret:
    """A secret value that does not show in reprs or logs (the daemon's side of `SecretStr`)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __len__(self) -> int:  # `if settings.station_password:` behaves as with SecretStr
        return len(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


class DaemonSettings:
    """The validated settings as the daemon process receives them: same attribute names, no pydantic."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    def secrets(self) -> list[str]:
        """The secret values in force, for log redaction (as `Settings.secrets`)."""
        return [v.get_secret_value() for v in vars(self).values()
                if isinstance(v, Secret) and v.get_secret_value()]

    def __repr__(self) -> str:
        return f"DaemonSettings({vars(self)!r})"


def encode(settings: Any) -> bytes:
    """The validated `Settings` (and the properties the daemon reads) as tagged JSON."""
    names = [*type(settings).model_fields, *DERIVED]
    values: dict[str, list[Any]] = {}
    for name in names:
        value = getattr(settings, name)
        if hasattr(value, "get_secret_value"):
            values[name] = ["secret", value.get_secret_value()]
        elif isinstance(value, PurePath):
            values[name] = ["path", str(value)]
        else:
            values[name] = ["plain", value]
    return json.dumps(values).encode()


def decode(data: bytes) -> DaemonSettings:
    kinds = {"secret": Secret, "path": Path, "plain": lambda v: v}
    return DaemonSettings({name: kinds[kind](value) for name, (kind, value) in json.loads(data).items()})


def exec_daemon(settings: Any) -> None:
    """Replace this process by the daemon with `settings`; returns only when that is impossible."""
    import subprocess  # only for the interpreter's flags (-X, -W, ...), as multiprocessing does

    data = encode(settings)
    if len(data) > MAX_PAYLOAD:
        return
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, data)
    finally:
        os.close(write_end)
    os.set_inheritable(read_end, True)
    argv = [sys.executable, *subprocess._args_from_interpreter_flags(),  # noqa: SLF001
            "-m", "station.handover", FD_FLAG, str(read_end)]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, argv)
    except OSError:
        os.close(read_end)


def run_daemon(settings: Any) -> int:
    """Configure logging and serve until SIGTERM (in whichever process holds the settings)."""
    from station import exitcodes, logs
    from station.daemon import serve

    logs.register_secrets(settings.secrets())
    log_file = getattr(settings, "log_file", None)
    stream: Any = None
    if log_file:
        try:
            stream = logs.RotatingFile(log_file)
        except OSError as exc:
            print(f"station: log file {log_file} not writable ({exc.strerror}); logging to stderr", file=sys.stderr)
    logs.configure(settings.log_format, settings.log_level, stream=stream,
                   driver_tokens=bool(getattr(settings, "log_driver_tokens", False)))
    try:
        return asyncio.run(serve(settings))
    except OSError as exc:
        import structlog

        structlog.get_logger("station").error("station cannot start", error=str(exc))
        return exitcodes.FAILURE
    except KeyboardInterrupt:
        return 130


def main(argv: list[str]) -> int:
    fd = int(argv[argv.index(FD_FLAG) + 1])
    with os.fdopen(fd, "rb") as pipe:
        settings = decode(pipe.read())
    return run_daemon(settings)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
