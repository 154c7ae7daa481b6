"""Real actors on disk for the execute tests, and the work of the process the crash tests kill."""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
import zlib
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops, ImageDraw, ImageFilter

from training_data.config import TargetConfig
from training_data.dataset import Actor, list_training_images, read_manifest
from training_data.evaluation import ImageEvaluation
from training_data.execute import apply_plan, recover
from training_data.generation import GenerationRequest, LocalGenerator
from training_data.plan import Plan, make_plan

PHOTO = "photorealistic"
BW = "bw_stylized"
COLOR = "color_stylized"


def synthetic_photo(seed: int, size: tuple[int, int] = (288, 360)) -> Image.Image:
    """A photo-like picture: soft shading, texture noise, a lit face-like shape."""
    rng = random.Random(seed)
    width, height = size
    gradient = Image.linear_gradient("L").resize(size).rotate(rng.randint(0, 359))
    photo = Image.merge(
        "RGB",
        (
            gradient.point(lambda v: 60 + v // 3),
            gradient.point(lambda v: 80 + v // 4),
            gradient.point(lambda v: 110 + v // 5),
        ),
    )
    draw = ImageDraw.Draw(photo)
    for _ in range(10):
        x, y, r = rng.randrange(width), rng.randrange(height), rng.randint(15, 70)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randint(40, 220) for _ in "rgb"))
    skin = (rng.randint(170, 230), rng.randint(120, 170), rng.randint(90, 130))
    draw.ellipse((width * 0.28, height * 0.18, width * 0.72, height * 0.72), fill=skin)
    for eye in (0.4, 0.6):
        draw.ellipse(
            (width * eye - 8, height * 0.4 - 5, width * eye + 8, height * 0.4 + 5), "white"
        )
        draw.ellipse(
            (width * eye - 4, height * 0.4 - 4, width * eye + 4, height * 0.4 + 4), "black"
        )
    photo = photo.filter(ImageFilter.GaussianBlur(2))
    shade = Image.radial_gradient("L").resize(size).point(lambda v: 255 - v // 3)
    photo = ImageChops.multiply(photo, Image.merge("RGB", (shade, shade, shade)))
    grain = Image.effect_noise(size, 12).convert("RGB")
    return ImageChops.add(photo, grain, scale=1.0, offset=-128)  # sensor noise


def drawing(seed: int, colour: bool, size: tuple[int, int] = (288, 360)) -> Image.Image:
    rng = random.Random(seed)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for _ in range(25):
        box = (
            sorted(rng.randrange(size[0]) for _ in "ab"),
            sorted(rng.randrange(size[1]) for _ in "ab"),
        )
        fill = tuple(rng.randrange(256) for _ in "rgb") if colour else None
        draw.rectangle(
            (box[0][0], box[1][0], box[0][1], box[1][1]), fill=fill, outline="black", width=2
        )
    return image


def make_actor(
    root: Path,
    counts: dict[str, int],
    *,
    name: str = "0046_european_25_female",
    untyped: int = 0,
    with_manifest: bool = True,
) -> Actor:
    """An actor whose images carry their category as a manifest ``type``; most have captions."""
    actor = Actor(name, root / "actors" / name)
    actor.training_dir.mkdir(parents=True)
    images: dict[str, dict[str, Any]] = {}
    number = 0
    for category, count in [*counts.items(), (None, untyped)]:
        for _ in range(count):
            number += 1
            filename = f"{name}_{number}.jpg"
            picture = (
                synthetic_photo(number)
                if category in (PHOTO, None)
                else drawing(number, category == COLOR)
            )
            picture.save(actor.training_dir / filename, quality=90)
            if number % 3:
                (actor.training_dir / f"{name}_{number}.txt").write_text(f"caption {number}\n")
            if number % 4 == 0:
                (actor.training_dir / f"{name}_{number}.caption").write_text(f"tags {number}\n")
            if category is not None:
                images[filename] = {"type": category, "source": "test", "rank": number}
    if with_manifest:
        manifest = {"actor_id": name, "images": images, "notes": {"kept": True}}
        actor.manifest_path.write_text(json.dumps(manifest, indent=2))
    return actor


def quality_of(filename: str) -> int:
    """A fixed, spread-out score per name, standing in for the evaluator's."""
    return 1 + zlib.crc32(filename.encode()) % 10


def evaluations(actor: Actor) -> list[ImageEvaluation]:
    images = list_training_images(actor, read_manifest(actor))
    return [
        ImageEvaluation(
            number=image.number,
            filename=image.filename,
            type=(image.entry or {}).get("type", PHOTO) if image.path.exists() else None,
            quality_score=quality_of(image.filename),
            issues=[] if image.path.exists() else ["unreadable"],
            width=None,
            height=None,
            sha256="",
        )
        for image in images
    ]


def plan_for(actor: Actor, target: TargetConfig | None = None) -> Plan:
    return make_plan(evaluations(actor), target or TargetConfig())


def photo_ranking(actor: Actor) -> list[str]:
    ranked = [e for e in evaluations(actor) if e.type == PHOTO]
    ranked.sort(key=lambda e: (-e.quality_score, e.number))
    return [e.filename for e in ranked]


def file_hashes(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file below ``folder``."""
    hashes = {}
    for parent, _, names in os.walk(folder, followlinks=True):
        for name in names:
            path = Path(parent) / name
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            hashes[path.relative_to(folder).as_posix()] = digest
    return dict(sorted(hashes.items()))


class SlowLocalGenerator(LocalGenerator):
    """The local generator, slowed so that a kill lands inside generation often."""

    def generate(self, request: GenerationRequest) -> bytes:
        time.sleep(0.05)
        return super().generate(request)


def slowed_renames() -> None:
    """In a child about to be killed: let each file move take a moment, so kills land among them."""
    real_rename = os.rename

    def rename(source: Any, destination: Any) -> None:
        time.sleep(0.01)
        real_rename(source, destination)

    os.rename = rename


def run_child(folder: Path, run: str, started: Event | None = None) -> None:
    """What the pipeline does for one actor in execute mode: recover, load, plan, apply."""
    slowed_renames()
    actor = Actor(folder.name, folder)
    recover(actor)
    images = list_training_images(actor, read_manifest(actor))
    plan = plan_for(actor)
    if started is not None:
        started.set()
    apply_plan(
        actor, images, plan, SlowLocalGenerator(), {}, run, source_ranking=photo_ranking(actor)
    )
