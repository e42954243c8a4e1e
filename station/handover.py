"""`station run`: the daemon gets validated settings without ever loading the configuration libraries.

Why: the configuration is read with pydantic-settings (flags > environment > env file >
defaults, one validation, one error report), but pydantic, pydantic-core, pydantic-settings
and python-dotenv would stay resident for the life of the process: ~14 MB of a Raspberry
Pi's memory (docs/performance.md) for something the daemon needs in its first 200 ms.

`station run` (`console` → `launch`, what systemd starts): the process that becomes the
daemon starts a short-lived child (`python -m station.handover --validate-to FD run ...`)
that parses the command line, loads and validates the settings and writes the validated
values into a pipe, while the parent imports the daemon's modules meanwhile; both take
~0.2 s of CPU, so on a multi-core Pi start-up costs the larger of the two instead of the
sum plus a second interpreter. The parent is the daemon from the start: same PID for systemd,
the notify socket and the watchdog. Secrets travel through the pipe, never through argv or
the environment. A configuration error is reported by the child, whose exit code the parent
returns.

Any other spelling (`station --env-file F run`) goes through the full CLI, which validates
in-process and then exec()s `python -m station.handover --settings-fd FD` to shed pydantic;
if exec is impossible, the daemon runs in that process.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path, PurePath
from typing import Any

FD_FLAG = "--settings-fd"
VALIDATE_FLAG = "--validate-to"
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


def console() -> int:
    """The `station` command: `station run ...` takes the fast path, everything else the full CLI."""
    argv = sys.argv[1:]
    if argv[:1] == ["run"] and not {"-h", "--help"} & set(argv):
        return launch(argv[1:])
    from station.cli import main

    try:
        code = main(argv)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader went away (`station config show | head`): no traceback, and no second one
        # when Python flushes stdout at exit. 141 = 128 + SIGPIPE, as a shell reports it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def launch(run_argv: list[str]) -> int:
    """Validate the settings in a child while this process imports the daemon; then serve."""
    import subprocess

    read_end, write_end = os.pipe()
    argv = [sys.executable, *subprocess._args_from_interpreter_flags(),  # noqa: SLF001
            "-m", "station.handover", VALIDATE_FLAG, str(write_end), "run", *run_argv]
    try:
        child = subprocess.Popen(argv, pass_fds=(write_end,), stdin=subprocess.DEVNULL)
    finally:
        os.close(write_end)
    try:
        import station.daemon  # noqa: F401 — the larger half of start-up, while the child validates
    finally:
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read()
        code = child.wait()
    if code != 0:
        return code  # the child reported the configuration or usage error
    if not data:
        return 1
    return run_daemon(decode(data))


def validate_to(fd: int, argv: list[str]) -> int:
    """The child of `launch`: full CLI parse and validation; the settings go to `fd`."""
    from station import exitcodes
    from station.cli import build_parser, load_config
    from station.config import ConfigError

    args = build_parser().parse_args(argv)
    if args.command != "run":
        print("station: expected the run command", file=sys.stderr)
        return exitcodes.USAGE
    try:
        loaded = load_config(args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return exitcodes.CONFIG
    with os.fdopen(fd, "wb") as pipe:
        pipe.write(encode(loaded.settings))
    # Skip the interpreter's teardown (~0.1 s with pydantic loaded): the daemon waits for our exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exitcodes.OK)


def run_daemon(settings: Any) -> int:
    """Configure logging and serve until SIGTERM (in whichever process holds the settings)."""
    import asyncio

    from station import exitcodes, logs
    from station.daemon import AlreadyRunning, serve

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
    except AlreadyRunning as exc:
        print(str(exc), file=sys.stderr)
        return exitcodes.ALREADY_RUNNING
    except OSError as exc:
        import structlog

        structlog.get_logger("station").error("station cannot start", error=str(exc))
        return exitcodes.FAILURE
    except KeyboardInterrupt:
        return 130


def main(argv: list[str]) -> int:
    if argv[:1] == [VALIDATE_FLAG]:
        return validate_to(int(argv[1]), argv[2:])
    fd = int(argv[argv.index(FD_FLAG) + 1])
    with os.fdopen(fd, "rb") as pipe:
        settings = decode(pipe.read())
    return run_daemon(settings)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
