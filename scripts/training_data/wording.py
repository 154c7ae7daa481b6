"""Counts in console lines and reasons, written as a person would write them."""

from __future__ import annotations


def plural(count: int, noun: str) -> str:
    """``1 actor``, ``2 actors``, ``0 images``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
