"""`mmserve` command line (typer + rich), one module per command group:

    serving.py   build, serve, demo
    search.py    index, search, classify, info   (through a running server; --server, --index)
    bench.py     bench                           (load-test a running server)
    local.py     export, quality, embed-text, embed-image   (in-process, no server)
    deploy.py    deploy k8s, deploy prometheus-adapter      (manifests for serving past one machine)

Options come from the configuration's fields (`options.py`), so each may also be set as its MMSERVE_*
variable. Errors print one line and exit 1; usage errors exit 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import os
import signal
import threading

# `serve` and `demo` start tritonserver and nginx (fork + exec) while gRPC threads run; gRPC's fork handlers
# could do nothing for a child that execs at once, and would log a line for every start.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import typer
from rich.console import Console

app = typer.Typer(
    name="mmserve", help="Multimodal (CLIP) embedding server and cross-modal search.", no_args_is_help=True,
    add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
)
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


def _version(value: bool) -> None:
    if value:
        from mmserve import __version__

        out.print(f"mmserve {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True,
                                       callback=_version)) -> None:
    """Multimodal (CLIP) embedding server and cross-modal search."""


from mmserve.cli import serving, search, api, bench, local, deploy  # noqa: E402, F401  # isort: skip  (registers the commands, in this order)


def main(argv: list[str] | None = None) -> int:
    from mmserve.errors import MmserveError, ServerUnavailableError
    from mmserve.index import IndexLockedError
    from mmserve.runtimes import RuntimeUnavailableError

    # typer returns normally after a Ctrl-C it caught; remember the signal to exit 130 all the same.
    interrupted = threading.Event()

    def on_interrupt(signum, frame) -> None:
        interrupted.set()
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, on_interrupt)
    try:
        app(args=argv, prog_name="mmserve", standalone_mode=False)
    except KeyboardInterrupt:
        interrupted.set()
    except typer.Exit as done:
        return done.exit_code
    except typer.Abort:
        err.print("aborted")
        return 1
    except (FileNotFoundError, FileExistsError, ValueError, LookupError, PermissionError, MmserveError,
            IndexLockedError, RuntimeUnavailableError) as error:
        err.print(f"mmserve: error: {error}")
        if isinstance(error, ServerUnavailableError):
            err.print("is the server running? start one with `mmserve serve`, or point --server at it")
        return 1
    except Exception as error:
        # Usage errors (typer's click exceptions know how to print themselves).
        exit_code = getattr(error, "exit_code", None)
        if hasattr(error, "show") and isinstance(exit_code, int):
            error.show()
            return exit_code
        raise
    if interrupted.is_set():
        err.print("interrupted")
        return 128 + signal.SIGINT
    return 0
