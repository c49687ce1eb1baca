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

        return _guard(lambda: exec_main(args[1:]))
    return _guard(lambda: _typer_main(args))


def _typer_main(args: list[str]) -> int:
    from devbox_cli.cli import app

    try:
        app(args=args, prog_name="devbox", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


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
