"""What every `medpriv` command shares: expected failures as one line (exit 2), unexpected ones
as one line naming only the exception's type and module (exit 3), never a local variable or a
message that may carry a patient's values; `--debug` shows the traceback (still without locals).
Command-line syntax errors (an unknown option, `--epochs abc`) are one `error:` line too.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import click
import typer
from typer.core import TyperGroup

from medpriv.config import Range
from medpriv.errors import ConfigError, MedprivError, raise_all

F = TypeVar("F", bound=Callable[..., Any])
BAD_INPUT_EXIT = 2
INTERNAL_ERROR_EXIT = 3
AUDIT_EXIT = 4  # a run finished, and an audit contradicts a claimed ε


def contradicted_runs(document: dict) -> list[str]:
    """Names of the runs whose canary audit contradicts their claimed ε."""
    return [
        str(run.get("name"))
        for run in document.get("runs") or []
        if isinstance(run, dict)
        and ((run.get("attacks") or {}).get("audit") or {}).get("consistent") is False
    ]


DEBUG_FLAG = "--debug"
DEBUG_ENV = "MEDPRIV_DEBUG"


def debugging() -> bool:
    """True when the user asked for tracebacks (`--debug` anywhere, or MEDPRIV_DEBUG=1)."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def take_debug_flag(argv: list[str]) -> list[str]:
    """`argv` without `--debug`, which switches `debugging()` on for this process (the flag is
    accepted after any command, so "rerun with --debug" works wherever the user types it)."""
    if DEBUG_FLAG not in argv:
        return argv
    os.environ[DEBUG_ENV] = "1"
    return [arg for arg in argv if arg != DEBUG_FLAG]


def internal_error_line(exc: BaseException) -> str:
    """One line naming the exception's type and where it was raised: never its message, which
    may quote a value from the data."""
    frames = traceback.extract_tb(exc.__traceback__)
    module = _module_of(frames[-1].filename) if frames else "medpriv"
    return (
        f"internal error: {type(exc).__name__} in {module}; rerun with {DEBUG_FLAG} for a traceback"
    )


def _module_of(filename: str) -> str:
    path = filename.replace(os.sep, "/")
    for marker in ("/site-packages/", "/src/"):
        if marker in path:
            path = path.rsplit(marker, 1)[1]
            break
    else:
        path = path.rsplit("/", 1)[-1]
    return path.removesuffix(".py").replace("/", ".")


def one_line(message: object) -> str:
    """`message` on one line: line breaks become spaces, so an error is always one `error:` line."""
    return " ".join(str(message).split("\n")).replace("\r", " ")


class OneLineGroup(TyperGroup):
    """The root command group: a command-line syntax error (unknown option, a value of the
    wrong type, a missing option) is one `error:` line naming the fix and exits 2, instead of
    Click's boxed multi-line usage message."""

    def main(  # type: ignore[override]
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            returned = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        except click.exceptions.NoArgsIsHelpError as exc:  # the help is printed already
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            typer.echo(f"error: {usage_error_line(exc)}", err=True)
            sys.exit(exc.exit_code)
        # Not standalone, Click returns the exit code of `typer.Exit` / `--help` (our commands
        # themselves return None).
        sys.exit(returned if isinstance(returned, int) else 0)


def usage_error_line(exc: click.ClickException) -> str:
    """Click's message on one line, with where to find the valid options."""
    message = one_line(exc.format_message())
    context = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and context is not None:
        message += f" (see {context.command_path} --help)"
    return message


def check_options(**options: tuple[float | None, Range]) -> None:
    """Refuse, in one line naming each option, the options outside their range (None = not
    given); keyword `max_epsilon` stands for `--max-epsilon`. NaN and ±inf never pass."""
    raise_all(
        [
            f"--{name.replace('_', '-')} must be {valid.describe()}; got {value!r}"
            for name, (value, valid) in options.items()
            if value is not None and value not in valid
        ],
        ConfigError,
    )


def one_line_errors(func: F) -> F:
    """Expected failures print one `error:` line and exit 2; anything else prints one
    `error: internal error: ...` line and exits 3 (traceback without locals with `--debug`)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MedprivError as exc:
            typer.echo(f"error: {one_line(exc)}", err=True)
            raise typer.Exit(BAD_INPUT_EXIT) from None
        except (typer.Exit, typer.Abort, click.exceptions.ClickException, KeyboardInterrupt):
            raise
        except Exception as exc:  # the catch-all the CLI promises
            if debugging():
                traceback.print_exception(exc, file=sys.stderr)  # no locals, ever
            typer.echo(f"error: {internal_error_line(exc)}", err=True)
            raise typer.Exit(INTERNAL_ERROR_EXIT) from None

    return wrapper  # type: ignore[return-value]
