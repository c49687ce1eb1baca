"""`devbox exec`: run a command in a devbox, as fast as `docker exec` allows.

Start-up time is most of the cost of an exec, so this module speaks the Docker Engine API
by hand (wire.py) over the unix socket (three requests: create the exec, start it with a
hijacked stream, read its exit code) and imports only the standard library: no typer, rich,
docker-py, or even http.client (which drags in ssl). DevboxService.exec uses `run` for
Python callers.

A proxy that started again since its last config push (home.py's ledger) is unconfigured;
an exec then hands it its config first, through `heal` (the slow path, imported only then).
Telling costs one inspect of the proxy container, sent before the exec is created and read
after, so the engine answers both at once.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import TYPE_CHECKING

from devbox_cli.engine import wire
from devbox_cli.errors import (
    ConflictError,
    DevboxError,
    DevboxRuntimeError,
    NotFoundError,
    UsageError,
)
from devbox_cli.home import PushLedger, home_dir
from devbox_cli.names import box_container, check_devbox_name, proxy_container

if TYPE_CHECKING:
    from collections.abc import Callable

    Heal = Callable[[str], object]

USAGE = """\
Usage: devbox exec [OPTIONS] NAME [--] CMD [ARG...]

  Run CMD in the devbox NAME. Its stdout and stderr go to this process's stdout and
  stderr as they are produced, and its exit status becomes devbox's exit status.

Options:
  -e, --env K=V        Set an environment variable (repeatable; `-e K` passes K from here).
  -w, --workdir DIR    Working directory inside the devbox.
  -u, --user USER      User (name or uid[:gid]) to run as.
  -i, --interactive    Forward stdin to the command (EOF is passed on).
  -t, --tty            Allocate a terminal (raw stream; stdout and stderr merge).
  -h, --help           Show this message and exit.

Exit status: the command's own; 126/127 when it cannot be run or found; 3 when there is
no devbox NAME; 4 when it is stopped (`devbox start NAME`) or paused for a snapshot; 6 when
Docker is not reachable.
"""


class ExecOptions:
    """What to run where. A plain class: dataclasses costs ~10 ms of import time here."""

    __slots__ = ("cmd", "env", "interactive", "name", "tty", "user", "workdir")

    def __init__(
        self,
        name: str = "",
        cmd: list[str] | None = None,
        *,
        env: list[str] | None = None,
        workdir: str | None = None,
        user: str | None = None,
        interactive: bool = False,
        tty: bool = False,
    ) -> None:
        self.name = name
        self.cmd = cmd or []
        self.env = env or []
        self.workdir = workdir
        self.user = user
        self.interactive = interactive
        self.tty = tty


def create_exec(opts: ExecOptions, *, attach_stdin: bool) -> str:
    body = {
        "AttachStdin": attach_stdin,
        "AttachStdout": True,
        "AttachStderr": True,
        "Tty": opts.tty,
        "Env": opts.env,
        "Cmd": opts.cmd,
    }
    if opts.workdir:
        body["WorkingDir"] = opts.workdir
    if opts.user:
        body["User"] = opts.user
    status, data = wire.request(
        "POST", f"/containers/{box_container(check_devbox_name(opts.name))}/exec", body
    )
    if status == 201 and isinstance(data, dict):
        return str(data["Id"])
    if status == 404:
        raise NotFoundError(
            f"no devbox {opts.name}", "`devbox list` shows the devboxes; `devbox create` makes one"
        )
    if status == 409:
        raise not_running(opts.name, wire.message(data))
    raise DevboxRuntimeError(f"docker exec in devbox {opts.name} failed: {wire.message(data)}")


def proxy_probe(name: str) -> socket.socket | None:
    """The inspect of the devbox's proxy container, sent now and read by needs_config."""
    try:
        return wire.begin("GET", f"/containers/{proxy_container(name)}/json")
    except DevboxError:
        return None  # the engine is unreachable: creating the exec says so


def needs_config(probe: socket.socket, ledger: PushLedger) -> bool:
    """Whether the proxy has started again since the push the ledger records (so it holds
    no config), or stopped while its box runs. An answer that can't tell means no."""
    try:
        status, data = wire.finish(probe)
    except (OSError, ValueError, DevboxError):
        return False
    state = data.get("State") if status == 200 and isinstance(data, dict) else None
    if not isinstance(state, dict) or state.get("Paused"):
        return False
    if not state.get("Running"):
        return state.get("Status") in ("exited", "created")
    return ledger.holds(data.get("Id"), state.get("StartedAt")) is not True  # type: ignore[union-attr]


def create_healed(
    opts: ExecOptions, *, attach_stdin: bool, heal: Heal | None, ledger: PushLedger | None
) -> str:
    """create_exec, and when the devbox's proxy needs its config, `heal` first."""
    probe = proxy_probe(opts.name) if heal is not None else None
    try:
        exec_id = create_exec(opts, attach_stdin=attach_stdin)
    except BaseException:
        if probe is not None:
            probe.close()
        raise
    if probe is not None and heal and needs_config(probe, ledger or PushLedger(home_dir())):
        heal(opts.name)
    return exec_id


def not_running(name: str, why: str) -> ConflictError:
    """The engine refused the exec for the box's state (409): stopped, or paused while a
    snapshot is taken. Only this error path pays for the inspect that tells which."""
    status, data = wire.request("GET", f"/containers/{box_container(name)}/json")
    state = data.get("State") if status == 200 and isinstance(data, dict) else None
    state = state if isinstance(state, dict) else {}
    if state.get("Status") == "paused":
        return ConflictError(
            f"devbox {name} is paused while a snapshot is taken", "try again in a moment"
        )
    hint = f"start it with `devbox start {name}`"
    if state.get("Status") != "exited":
        return ConflictError(f"devbox {name} is not running ({why})", hint)
    since = str(state.get("FinishedAt") or "").split(".")[0].rstrip("Z")
    known = since[:4].isdigit() and since[:4] != "0001"
    return ConflictError(
        f"devbox {name} is stopped" + (f" (since {since}Z)" if known else ""), hint
    )


def start_exec(exec_id: str, tty: bool) -> tuple[socket.socket, bytes]:
    """Start the exec and return the hijacked socket plus any stream bytes already read."""
    sock = wire.connect()
    wire.send(sock, "POST", f"/exec/{exec_id}/start", {"Detach": False, "Tty": tty}, upgrade=True)
    status, headers, rest = wire.read_head(sock)
    if status not in (101, 200):
        body = wire.read_body(sock, headers, rest)
        sock.close()
        raise DevboxRuntimeError(f"docker exec failed to start: {body.decode(errors='replace')}")
    return sock, rest


def exit_code(exec_id: str) -> int:
    def inspect() -> dict[str, object]:
        status, data = wire.request("GET", f"/exec/{exec_id}/json")
        if status != 200 or not isinstance(data, dict):
            raise DevboxRuntimeError(
                f"cannot read the exit status of the exec: {wire.message(data)}"
            )
        return data

    return wire.poll_exit_code(inspect)


def _pump_stdin(sock: socket.socket, source: int | bytes) -> None:
    """Copy stdin (a fd, or bytes) to the exec, then half-close so the command sees EOF."""
    try:
        if isinstance(source, bytes):
            sock.sendall(source)
        else:
            while chunk := os.read(source, 65536):
                sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the command exited and the engine closed its side first


def run(
    opts: ExecOptions,
    stdin: bytes | None = None,
    *,
    heal: Heal | None = None,
    ledger: PushLedger | None = None,
) -> tuple[int, bytes, bytes]:
    """Run to completion and capture: (exit code, stdout, stderr). For Python callers."""
    check_devbox_name(opts.name)
    exec_id = create_healed(opts, attach_stdin=stdin is not None, heal=heal, ledger=ledger)
    sock, rest = start_exec(exec_id, opts.tty)
    out, err = bytearray(), bytearray()
    with sock:
        if stdin is not None:
            import threading

            threading.Thread(target=_pump_stdin, args=(sock, stdin), daemon=True).start()
        if opts.tty:
            out += rest
            while chunk := sock.recv(262144):
                out += chunk
        else:
            for stream, payload in wire.frames(sock, rest):
                (err if stream == 2 else out).extend(payload)
    return exit_code(exec_id), bytes(out), bytes(err)


# -- the command line ----------------------------------------------------------------------


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _resize(exec_id: str) -> None:
    try:
        cols, rows = os.get_terminal_size(sys.stdout.fileno())
        wire.request("POST", f"/exec/{exec_id}/resize?h={rows}&w={cols}")
    except (OSError, DevboxRuntimeError):
        pass


def _interactive(opts: ExecOptions, exec_id: str) -> int:
    sock, rest = start_exec(exec_id, opts.tty)
    restore = None
    if opts.tty and os.isatty(0):
        import signal
        import termios
        import tty

        saved = termios.tcgetattr(0)
        tty.setraw(0)
        restore = lambda: termios.tcsetattr(0, termios.TCSADRAIN, saved)  # noqa: E731
        _resize(exec_id)
        signal.signal(signal.SIGWINCH, lambda *_: _resize(exec_id))
    try:
        if opts.interactive:
            import threading

            threading.Thread(target=_pump_stdin, args=(sock, 0), daemon=True).start()
        try:
            if opts.tty:
                _write(1, rest)
                while chunk := sock.recv(262144):
                    _write(1, chunk)
            else:
                for stream, payload in wire.frames(sock, rest):
                    _write(2 if stream == 2 else 1, payload)
        except BrokenPipeError:
            return 141  # our reader went away, as a shell reports SIGPIPE
    finally:
        sock.close()
        if restore:
            restore()
    return exit_code(exec_id)


def parse_args(args: list[str]) -> ExecOptions | None:
    """Parse `devbox exec` arguments; None means --help was asked for."""
    opts = ExecOptions()
    takes_value = {"e": "env", "w": "workdir", "u": "user"}
    longs = {"--env": "e", "--workdir": "w", "--user": "u", "--interactive": "i", "--tty": "t"}
    i = 0

    def value_of(flag: str, inline: str | None) -> str:
        nonlocal i
        if inline is not None:
            return inline
        i += 1
        if i >= len(args):
            raise UsageError(f"devbox exec: {flag} needs a value", "see `devbox exec --help`")
        return args[i]

    def apply(letter: str, flag: str, inline: str | None) -> None:
        if letter == "i":
            opts.interactive = True
        elif letter == "t":
            opts.tty = True
        elif letter == "e":
            item = value_of(flag, inline)
            if "=" not in item:
                if item not in os.environ:
                    return
                item = f"{item}={os.environ[item]}"
            opts.env.append(item)
        elif letter == "w":
            opts.workdir = value_of(flag, inline)
        elif letter == "u":
            opts.user = value_of(flag, inline)

    while i < len(args):
        arg = args[i]
        if arg == "--":
            opts.cmd = args[i + 1 :]
            break
        if arg in ("-h", "--help"):
            return None
        if arg.startswith("--"):
            flag, eq, inline = arg.partition("=")
            if flag not in longs:
                raise UsageError(f"devbox exec: unknown option {flag}", "see `devbox exec --help`")
            apply(longs[flag], flag, inline if eq else None)
        elif arg.startswith("-") and len(arg) > 1:
            for pos, letter in enumerate(arg[1:], start=1):
                if letter in takes_value:
                    apply(letter, f"-{letter}", arg[pos + 1 :] or None)
                    break
                if letter not in "it":
                    raise UsageError(
                        f"devbox exec: unknown option -{letter}", "see `devbox exec --help`"
                    )
                apply(letter, f"-{letter}", None)
        elif not opts.name:
            opts.name = arg
        else:
            opts.cmd = args[i:]
            break
        i += 1
    if not opts.name:
        raise UsageError("devbox exec: missing NAME", "usage: devbox exec NAME -- CMD [ARG...]")
    if not opts.cmd:
        raise UsageError("devbox exec: missing CMD", "usage: devbox exec NAME -- CMD [ARG...]")
    check_devbox_name(opts.name)
    return opts


def main(args: list[str], heal: Heal | None = None) -> int:
    opts = parse_args(args)
    if opts is None:
        sys.stdout.write(USAGE)
        return 0
    exec_id = create_healed(opts, attach_stdin=opts.interactive, heal=heal, ledger=None)
    return _interactive(opts, exec_id)
