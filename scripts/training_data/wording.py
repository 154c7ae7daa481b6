"""Counts in console lines and reasons, written as a person would write them."""

from __future__ import annotations

from collections.abc import Mapping


def plural(count: int, noun: str) -> str:
    """``1 actor``, ``2 actors``, ``0 images``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def slashed(counts: Mapping[str, int]) -> str:
    """``13/4/3``: counts in the order of the target mix."""
    return "/".join(str(count) for count in counts.values())
