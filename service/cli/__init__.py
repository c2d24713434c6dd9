"""The ``collapsewatch`` command. Subcommands live in small modules that register here."""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

from pydantic import ValidationError

from service.domain.errors import DomainError

# each module exposes register(subparsers); a parser sets func(args) -> int exit code
COMMAND_MODULES = (
    "service.cli.server",   # serve, api, worker, beat, migrate
    "service.cli.keys",     # keys create, keys list, keys revoke
    "service.cli.secrets",  # secrets rotate
    "service.cli.offline",  # reference build, score, baseline build
    "service.cli.collect",  # collect openai, collect tail
    "service.cli.gc",       # gc [--dry-run] (retention)
    "service.cli.mix",      # mix estimate, mix filter (synthetic share)
)


class CliError(Exception):
    """Bad input: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="collapsewatch",
        description="Watch deployed generative models for model collapse.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except (CliError, DomainError) as exc:
        print(f"collapsewatch: error: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        if exc.title != "Settings":
            raise
        # a COLLAPSEWATCH_* variable the settings cannot read: one line per variable
        for err in exc.errors():
            name = "COLLAPSEWATCH_" + "_".join(str(p) for p in err["loc"]).upper()
            print(f"collapsewatch: error: {name}: {err['msg']}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
