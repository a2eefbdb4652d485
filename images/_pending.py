"""Temporary: registers a subcommand whose implementation has not landed, failing honestly."""

from __future__ import annotations

import argparse
import sys


def add_pending(sub: argparse._SubParsersAction, name: str, issue: int) -> None:
    def _fail(_args: argparse.Namespace) -> int:
        print(f"error: '{name}' is not implemented yet (issue {issue})", file=sys.stderr)
        return 1

    sub.add_parser(name, help=f"(not implemented yet: issue {issue})").set_defaults(func=_fail)
