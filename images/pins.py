"""Stub: replaced by the module's real implementation."""

from images._pending import add_pending


def add_parsers(sub) -> None:
    add_pending(sub, "pins", 2)
    add_pending(sub, "pins-check", 2)
