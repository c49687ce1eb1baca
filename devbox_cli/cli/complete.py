"""Shell-completion callbacks for names (Typer's `autocompletion=`): each asks
services/completion.py, imported only when a shell asks for a completion."""

from __future__ import annotations


def _names(kind: str, incomplete: str) -> list[str]:
    from devbox_cli.services.completion import complete

    return complete(kind, incomplete)


def devboxes(incomplete: str) -> list[str]:
    return _names("devbox", incomplete)


def secrets(incomplete: str) -> list[str]:
    return _names("secret", incomplete)


def gateways(incomplete: str) -> list[str]:
    return _names("gateway", incomplete)


def policies(incomplete: str) -> list[str]:
    return _names("policy", incomplete)


def snapshots(incomplete: str) -> list[str]:
    return _names("snapshot", incomplete)


def volumes(incomplete: str) -> list[str]:
    return _names("volume", incomplete)


EXEC_VALUE_FLAGS = frozenset({"-e", "--env", "-w", "--workdir", "-u", "--user"})


def exec_command_class() -> type:
    """The click command class of `devbox exec`: its arguments are passed through untouched
    (engine/fastexec.py parses them), so it has no parameter a shell could complete; this
    completes the devbox name, the first word that is neither a flag nor a flag's value."""
    from typer.core import TyperCommand

    class ExecCommand(TyperCommand):
        def shell_complete(self, ctx, incomplete):  # type: ignore[no-untyped-def]
            from typer._click.shell_completion import CompletionItem

            words, expect_value = [], False
            for arg in ctx.args:
                if expect_value:
                    expect_value = False
                elif arg in EXEC_VALUE_FLAGS:
                    expect_value = True
                elif not arg.startswith("-"):
                    words.append(arg)
            if words or expect_value or incomplete.startswith("-"):
                return []
            return [CompletionItem(n) for n in devboxes(incomplete)]

    return ExecCommand
