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
    return 0


if __name__ == "__main__":
    sys.exit(main())
