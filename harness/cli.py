"""run_bench.py's command line: a table of subcommands, each in its own module.

Each module in harness/commands/ offers ``add_arguments(parser)`` and ``run(args) -> int``.
A UsageError anywhere becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import contextlib
import signal
import sys
import threading
import warnings
from typing import Iterator, Sequence

from harness.errors import UnknownNameError, UsageError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("harness.commands.run", "default benchmark on the best device here, then its "
                                    "report (the default command)"),
    "sweep": ("harness.commands.sweep", "run a chosen grid: preset, config file, flags"),
    "list": ("harness.commands.list_impls", "list implementations and their availability here"),
    "check": ("harness.commands.check", "check every available implementation against its "
                                        "reference"),
    "lra": ("harness.commands.lra", "train and evaluate on LRA tasks or a bytes folder "
                                    "(accuracy records)"),
    "report": ("harness.commands.report", "render figures, tables and a report from run "
                                          "directories"),
    "data": ("harness.commands.data", "write a generated listops or pathfinder set in the "
                                      "official layout"),
    "merge": ("harness.commands.merge", "join run directories (shards, machines) into one, "
                                        "refusing conflicting duplicates"),
    "compare": ("harness.commands.compare", "regression check of a run against a baseline "
                                            "(exit 1 on a regression)"),
    "ab": ("harness.commands.ab", "interleaved A/B of two revisions or checkouts in one job "
                                  "(exit 1 on a regression)"),
    "repro": ("harness.commands.repro", "measure one point of a run again, alone, with the "
                                        "run's settings (its reproducer), beside the original"),
    "profile": ("harness.commands.profile", "one point under torch.profiler / jax.profiler: "
                                            "trace.json (Chrome trace) and ops.csv"),
}
DEFAULT_COMMAND = "run"


class ArgumentParser(argparse.ArgumentParser):
    """argparse that exits 2 with one clear line (argparse's own convention, kept short)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


# the parsed namespace's own names: an axis's flag of that name would overwrite them
NAMESPACE_NAMES = ("command", "argv", "impl_module", "impl_modules")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="run_bench.py",
                            description="attnbench: benchmark attention implementations.")
    parser.add_argument("--impl-module", action="append", default=[], metavar="MODULE",
                        help="import MODULE to register your own implementations (repeatable)")
    sub = parser.add_subparsers(dest="command", parser_class=ArgumentParser)
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.add_argument("--impl-module", action="append", default=argparse.SUPPRESS,
                             metavar="MODULE", help=argparse.SUPPRESS)
        try:
            importlib.import_module(module).add_arguments(command)
        except argparse.ArgumentError as exc:   # a plug-in axis's flag is an option's already
            raise UsageError(f"{name}: {exc} (a plug-in axis named like an option of "
                             f"run_bench.py {name}; choose another axis name)") from None
    return parser


def with_default_command(argv: list[str]) -> list[str]:
    """Insert the default command after the global options when none is named."""
    i = 0
    while i < len(argv):
        if argv[i] == "--impl-module":
            i += 2
        elif argv[i].startswith("--impl-module="):
            i += 1
        else:
            break
    if i < len(argv) and (argv[i] in COMMANDS or argv[i] in ("-h", "--help")):
        return argv
    if i < len(argv) and not argv[i].startswith("-"):
        raise UnknownNameError("command", argv[i], COMMANDS)
    return [*argv[:i], DEFAULT_COMMAND, *argv[i:]]


def impl_modules_of(argv: list[str]) -> list[str]:
    """The --impl-module values anywhere in argv (before the full parser exists: the modules
    may declare axes, whose flags the parser then has)."""
    early = ArgumentParser(prog="run_bench.py", add_help=False, allow_abbrev=False)
    early.add_argument("--impl-module", action="append", default=[])
    known, _ = early.parse_known_args(argv)
    return list(known.impl_module)


@contextlib.contextmanager
def store_warnings_as_lines() -> Iterator[None]:
    """A results line the store skips (torn or corrupt) is one ``warning:`` line on stderr,
    once per process however often the file is read (a resume reads it for the points done
    and again for the table), not Python's warning with its source line."""
    from harness.store.run_dir import TruncatedLineWarning

    shown: set[str] = set()
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, TruncatedLineWarning):
            return previous(message, category, filename, lineno, file, line)
        text = str(message)
        if text not in shown:
            shown.add(text)
            print(f"warning: {text}", file=sys.stderr)
        return None

    with warnings.catch_warnings():
        warnings.simplefilter("always", TruncatedLineWarning)   # repeats are dropped above
        warnings.showwarning = show
        yield


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's cancel, ``kill``, a CI timeout): taken down the path Ctrl-C
    takes, so that the live worker is ended, run.json says interrupted, a half-written report
    folder is removed, and the command ends with one line."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the command runs, SIGTERM raises Terminated (main thread only: a handler cannot be
    set elsewhere, as when tests call main() from a thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted_note(command: str | None) -> str:
    """What an interrupted command leaves: records kept and --resume for the measuring ones;
    nothing half-written for the others (a report folder being written is removed)."""
    if command in RESUMABLE:
        return "results written so far are kept; --resume goes on"
    if command in ("report", "merge"):
        return "no partial output is left behind"
    if command == "ab":
        return "its logs stay in --out; a new call with the same --out replaces them"
    return "stopped"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    with sigterm_as_interrupt():
        return _main(argv)


# the commands whose interrupted work --resume continues
RESUMABLE = ("sweep", "run", "lra")


def _main(argv: list[str]) -> int:
    command = None
    try:
        from harness.contract.axes import reserve_names
        from harness.contract.registry import REGISTRY, load_impl_modules

        reserve_names(NAMESPACE_NAMES)

        command_argv = with_default_command(argv)
        command = next((a for a in command_argv if a in COMMANDS), None)
        module_name = COMMANDS[command][0] if command else None
        # ab does not load them: each side loads its own, from its own tree
        if module_name is None or getattr(importlib.import_module(module_name),
                                          "LOADS_IMPL_MODULES", True):
            load_impl_modules(impl_modules_of(argv))
            REGISTRY.load_entry_points()
        args = build_parser().parse_args(command_argv)
        args.argv = command_argv   # as given: launchers re-run it elsewhere
        module = importlib.import_module(COMMANDS[args.command][0])
        with store_warnings_as_lines():
            return int(module.run(args) or 0)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print("terminated (SIGTERM): " + interrupted_note(command), file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted: " + interrupted_note(command), file=sys.stderr)
        return 130
