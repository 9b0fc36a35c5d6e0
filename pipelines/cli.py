"""The `recsys` command line. Every command exits non-zero with one clear line on bad input."""

from __future__ import annotations

import argparse
import logging
import sys

from pipelines.commands import COMMANDS
from recsys.errors import RecsysError


class Parser(argparse.ArgumentParser):
    """Bad flags are one `recsys: error:` line and exit 2, like every other bad input."""

    def error(self, message: str):
        self.exit(2, f"recsys: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="recsys", description="Recommendation from implicit feedback.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="recsys: %(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # to start copies of the command
    try:
        args.func(args)
    except RecsysError as exc:
        print(f"recsys: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("recsys: interrupted", file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError) as exc:
        if not _out_of_memory(exc):
            raise
        print(f"recsys: error: out of memory{_allocation(exc)}: lower the model's sizes "
              "(factors, hidden, batch_size), k, or the data", file=sys.stderr)
        return 2
    return 0


def _out_of_memory(exc: BaseException) -> bool:
    """A failed allocation: Python's MemoryError, torch's on a GPU (OutOfMemoryError) or on
    the CPU (a RuntimeError from its allocator)."""
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or (
        "can't allocate memory" in str(exc))


def _allocation(exc: BaseException) -> str:
    """' (N bytes asked for)' when the message says how much, else ''."""
    import re

    found = re.search(r"allocate (\d+) bytes|allocate ([\d.]+ [KMGT]?i?B)", str(exc))
    if not found:
        return ""
    return f" ({found.group(1) + ' bytes' if found.group(1) else found.group(2)} asked for)"


if __name__ == "__main__":
    sys.exit(main())
