"""Entry point: `devbox ...` and `python -m devbox_cli ...`.

Errors are caught here, once: a DevboxError becomes a short message and its exit code;
anything else becomes one line and exit 1, unless DEVBOX_DEBUG=1 asks for the traceback.
`devbox exec` takes a fast path that never imports typer, rich or docker-py.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["exec"]:
        from devbox_cli.engine.fastexec import main as exec_main

        return _guard(lambda: exec_main(args[1:], heal=_heal_proxy))
    return _guard(lambda: _typer_main(args))


def _heal_proxy(name: str) -> None:
    """The slow path of an exec whose proxy needs its config: only then is typer loaded."""
    from devbox_cli.cli.watch import heal_before_exec

    heal_before_exec(name)


def _typer_main(args: list[str]) -> int:
    import typer

    if args[:1] in (["--version"], ["-V"]):
        args = ["version", *args[1:]]  # `devbox --version -o json` as `devbox version -o json`
    if os.environ.get("_DEVBOX_COMPLETE"):
        # A shell asking for completions (`devbox completion SHELL` wrote the script): Typer
        # registers its shells' completion classes only when it adds its own options.
        from typer._completion_classes import completion_init

        completion_init()
    from devbox_cli.cli import app
    from devbox_cli.errors import DevboxError

    try:
        code = app(args=args, prog_name="devbox", standalone_mode=False)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except typer.Abort:
        raise DevboxError("aborted") from None
    except Exception as exc:
        # Click's usage errors (bad flag, missing argument, bad value): left to Typer they
        # print a five-line panel; as a DevboxError they are the usual two lines.
        if isinstance(exc, DevboxError) or not hasattr(exc, "format_message"):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":
            return int(exc.exit_code)  # type: ignore[attr-defined]  # the help is shown
        ctx = getattr(exc, "ctx", None)
        err = DevboxError(exc.format_message(), f"see `{ctx.command_path if ctx else 'devbox'} -h`")
        err.exit_code = int(exc.exit_code)  # type: ignore[attr-defined]
        raise err from None
    return code if isinstance(code, int) else 0


def _guard(run) -> int:  # type: ignore[no-untyped-def]
    from devbox_cli.errors import DevboxError

    debug = os.environ.get("DEVBOX_DEBUG") == "1"
    try:
        return run()
    except DevboxError as err:
        if debug:
            raise
        from devbox_cli.render import print_error

        print_error(err)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if debug:
            raise
        sys.stderr.write(
            f"error: unexpected {exc.__class__.__name__}; rerun with DEVBOX_DEBUG=1 for details\n"
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
