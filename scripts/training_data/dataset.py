"""Dataset of SPEC §2: find actors, read manifests, list and download training images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


@dataclass(frozen=True)
class Actor:
    """An actor, addressed by its folder name under ``<data-dir>/actors``."""

    name: str
    folder: Path

    @property
    def training_dir(self) -> Path:
        return self.folder / "training_data"

    @property
    def manifest_path(self) -> Path:
        return self.training_dir / "manifest.json"

    @property
    def base_image_dir(self) -> Path:
        return self.folder / "base_image"

    @property
    def removed_dir(self) -> Path:
        return self.folder / "removed_training_data"


@dataclass(frozen=True)
class TrainingImage:
    """One image of an actor's training set; ``number`` is 1-based in filename order."""

    number: int
    filename: str
    path: Path
    entry: dict[str, Any] | None = None

    def trusted_type(self, categories: tuple[str, ...]) -> str | None:
        """The manifest ``type``, when it names a configured category (SPEC §2)."""
        recorded = (self.entry or {}).get("type")
        return recorded if recorded in categories else None
