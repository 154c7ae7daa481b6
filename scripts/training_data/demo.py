"""The ``--demo`` dataset: a few dozen actors drawn with Pillow, defects planted.

One actor is real: public-domain photos of a person (``faces_data/``, sources and licences in
its SOURCES.md), with a photo of another person, one without a face and one with the face cut
off planted, and drawings the local generator made from the good photos. It shows the subject
checks at work. The drawn actors' manifests turn the subject checks off
(``"subject_checks": false``): the detector finds some of their drawn faces and not others, and
the rest of the demo shows the other rules.

Everything comes from one seed, so every creation gives byte-identical files (with the same
Pillow build). Every image has a manifest ``type``, so the demo's categories are exact and the
evaluator's verdicts on quality and defects are what a first run shows. The one download in the
dataset points at the loopback discard port, where a connection is refused at once: the demo never
touches the network.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops, ImageDraw, ImageEnhance, ImageFilter, ImageOps, ImageStat

from training_data.dataset import Actor
from training_data.errors import FatalRunError

DEMO_DATA_DIR = Path("debug/demo_data")
DEMO_OUTPUT_DIR = Path("debug/demo_evaluation")

DEMO_SEED = "evaluate_and_balance demo dataset v1"
IMAGE_SIDE = 512
JPEG_QUALITY = 80
BW_MAX_MEAN = 205  # line art brighter than this would read as a washed-out, too bright image
UNREACHABLE_URL = "http://127.0.0.1:9/demo"  # the discard port: refused at once, never off-host
PHOTO, BW, COLOR = "photorealistic", "bw_stylized", "color_stylized"

Color = tuple[int, int, int]


@dataclass(frozen=True)
class ActorRecipe:
    """How many images of each style one demo actor gets, and which defects are planted."""

    scenario: str
    photo: int
    bw: int
    color: int
    defects: tuple[str, ...] = ()
    base_image: bool = False
    real_faces: bool = False


SPECIAL_RECIPES = (
    ActorRecipe("balanced: 13/4/3", 13, 4, 3, base_image=True),
    ActorRecipe("balanced within tolerance: 12/5/3", 12, 5, 3),
    ActorRecipe("over target: 24 images", 16, 5, 3),
    ActorRecipe("under target: 15 images", 10, 3, 2, base_image=True),
    ActorRecipe("planted: truncated (unreadable) file", 13, 4, 3, ("unreadable",)),
    ActorRecipe(
        "planted: exact and near duplicate", 13, 4, 3, ("exact_duplicate", "near_duplicate")
    ),
    ActorRecipe("planted: blurry and very dark image, 22 images", 15, 4, 3, ("blurry", "dark")),
    ActorRecipe("planted: tiny 64x64 image", 13, 4, 3, ("tiny",), base_image=True),
    ActorRecipe("planted: manifest URL that cannot be downloaded", 13, 4, 3, ("undownloadable",)),
    ActorRecipe("no training images", 0, 0, 0),
    ActorRecipe("wrong mix: 18/1/1", 18, 1, 1),
    ActorRecipe("wrong mix: 8/8/4", 8, 8, 4, base_image=True),
    ActorRecipe(
        "real faces: another person, no face, face cut off",
        5,
        2,
        1,
        ("other_person", "no_face", "face_cut_off"),
        base_image=True,
        real_faces=True,
    ),
)
ORDINARY_RECIPES = (
    ActorRecipe("balanced: 13/4/3", 13, 4, 3),
    ActorRecipe("over target: 24 images", 15, 5, 4),
    ActorRecipe("under target: 15 images", 9, 3, 3),
    ActorRecipe("balanced within tolerance: 14/3/3", 14, 3, 3),
    ActorRecipe("over target: 22 images", 14, 5, 3),
    ActorRecipe("under target: 17 images", 11, 4, 2),
)
ACTOR_COUNT = 30

PROMPTS = {
    PHOTO: "a natural photograph of a demo actor, soft daylight, sharp focus",
    BW: "a black-and-white ink drawing of a demo actor, bold clean linework",
    COLOR: "a colorful comic-book illustration of a demo actor, cel shading, flat colors",
}
CAPTIONS = {
    PHOTO: "photo of demo actor {number}, portrait, natural light",
    BW: "black and white ink drawing of demo actor {number}, line art",
    COLOR: "color comic illustration of demo actor {number}, cel shading",
}


def ensure_demo_dataset(data_dir: Path) -> bool:
    """Create the demo dataset unless it is there; True when this call created it.

    It is built in a hidden sibling folder and renamed into place, so an interrupted creation
    leaves no half dataset: the next call sweeps the leftover and builds again. An existing,
    non-empty folder is never written into.
    """
    data_dir = Path(data_dir)
    if _is_present(data_dir):
        return False
    try:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        _sweep_abandoned_builds(data_dir)
        build_dir = (
            data_dir.parent / f"{_build_prefix(data_dir)}{os.getpid()}-{secrets.token_hex(4)}"
        )
        build_dir.mkdir()
    except OSError as error:
        raise FatalRunError(f"cannot create the demo dataset in {data_dir}: {error}") from None
    try:
        write_demo_dataset(build_dir)
        os.rename(build_dir, data_dir)
    except OSError as error:
        shutil.rmtree(build_dir, ignore_errors=True)
        if _is_present(data_dir):  # another process created it at the same moment
            return False
        raise FatalRunError(f"cannot create the demo dataset in {data_dir}: {error}") from None
    except BaseException:
        shutil.rmtree(build_dir, ignore_errors=True)
        raise
    return True


def _is_present(data_dir: Path) -> bool:
    if not data_dir.exists():
        return False
    return not data_dir.is_dir() or any(data_dir.iterdir())


def _build_prefix(data_dir: Path) -> str:
    return f".{data_dir.name}.building-"


def _sweep_abandoned_builds(data_dir: Path) -> None:
    """Remove build folders whose creator process is gone (killed mid-creation)."""
    prefix = _build_prefix(data_dir)
    for leftover in data_dir.parent.glob(f"{prefix}*"):
        pid_text = leftover.name[len(prefix) :].split("-", 1)[0]
        if pid_text.isdigit() and not _process_alive(int(pid_text)):
            shutil.rmtree(leftover, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def demo_recipes() -> list[tuple[str, ActorRecipe]]:
    """The actors, by folder name: the special cases first, so a first run shows them early."""
    recipes = list(SPECIAL_RECIPES)
    while len(recipes) < ACTOR_COUNT:
        ordinary = ORDINARY_RECIPES[(len(recipes) - len(SPECIAL_RECIPES)) % len(ORDINARY_RECIPES)]
        base_image = len(recipes) % 3 == 0
        recipes.append(
            ActorRecipe(
                ordinary.scenario, ordinary.photo, ordinary.bw, ordinary.color, (), base_image
            )
        )
    return [(f"{index:04d}_demo_actor", recipe) for index, recipe in enumerate(recipes, start=1)]


def write_demo_dataset(root: Path) -> None:
    """Write the whole dataset (the documented layout) under ``root``."""
    palette = _Palette.create(random.Random(DEMO_SEED))
    actors_data = []
    for name, recipe in demo_recipes():
        _write_actor(root / "actors" / name, name, recipe, palette)
        descriptor = FACE_DESCRIPTOR if recipe.real_faces else "a fictional demo person"
        actors_data.append(
            {"name": name, "descriptor": descriptor, "demo_scenario": recipe.scenario}
        )
    _write_json(root / "actorsData.json", actors_data)


# --- one actor ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Look:
    """What stays the same across an actor's images: skin, hair, favourite colours."""

    skin: Color
    hair: Color
    accent: Color


def _write_actor(folder: Path, name: str, recipe: ActorRecipe, palette: _Palette) -> None:
    if recipe.real_faces:
        _write_face_actor(folder, name)
        return
    rng = random.Random(f"{DEMO_SEED}/{name}")
    number = int(name[:4])
    look = _Look(
        skin=rng.choice(SKIN_TONES),
        hair=rng.choice(HAIR_COLORS),
        accent=_random_color(rng, saturation=0.8),
    )
    training_dir = folder / "training_data"
    training_dir.mkdir(parents=True)
    if recipe.base_image:
        base_dir = folder / "base_image"
        base_dir.mkdir()
        (base_dir / f"{name}_base.jpg").write_bytes(
            _jpeg(_draw_photo(rng, look, palette, centered=True))
        )
    categories = [PHOTO] * recipe.photo + [BW] * recipe.bw + [COLOR] * recipe.color
    if not categories:
        return
    rng.shuffle(categories)
    if any(defect.endswith("duplicate") for defect in recipe.defects):
        # the copied photo comes first in any filename order, so the copies are the later files
        categories.remove(PHOTO)
        categories.insert(0, PHOTO)
    entries: dict[str, dict[str, Any]] = {}
    photo_numbers = [i for i, category in enumerate(categories, start=1) if category == PHOTO]
    planted = _plant(recipe.defects, photo_numbers, rng)
    for index, category in enumerate(categories, start=1):
        defect = planted.get(index)
        suffix = _suffix(category, rng)
        filename = f"{name}_{index}{suffix}"
        entry: dict[str, Any] = {"type": category}
        if category != PHOTO or rng.random() < 0.2:
            entry["prompt"] = PROMPTS[category]
        if defect:
            entry["demo_planted"] = defect
            if defect.endswith("duplicate"):
                entry["demo_planted"] = f"{defect} of {name}_{photo_numbers[0]}.jpg"
        entries[filename] = entry
        if defect == "undownloadable":
            entry["url"] = f"{UNREACHABLE_URL}/{name}/{filename}"
            continue
        original = training_dir / f"{name}_{photo_numbers[0]}.jpg" if photo_numbers else None
        content = _image_file(category, defect, suffix, rng, look, palette, original)
        (training_dir / filename).write_bytes(content)
        if rng.random() < 0.4:
            caption = CAPTIONS[category].format(number=number)
            (training_dir / filename).with_suffix(".txt").write_text(caption + "\n")
    # Drawn faces: some found by the detector, some not; the face checks are for the real actor.
    manifest = {"actor_id": name, "subject_checks": False, "images": entries}
    _write_json(training_dir / "manifest.json", manifest)


def _suffix(category: str, rng: random.Random) -> str:
    """Line art goes to PNG (JPEG would smear the hatching at three times the size)."""
    if category == BW or (category == COLOR and rng.random() < 0.3):
        return ".png"
    return ".jpg"


def _plant(
    defects: tuple[str, ...], photo_numbers: list[int], rng: random.Random
) -> dict[int, str]:
    """Which image numbers carry which defect; duplicates copy the first photo, so skip it."""
    candidates = photo_numbers[1:]
    chosen = rng.sample(candidates, len(defects))
    return dict(zip(chosen, defects, strict=True))


def _image_file(
    category: str,
    defect: str | None,
    suffix: str,
    rng: random.Random,
    look: _Look,
    palette: _Palette,
    original: Path | None,
) -> bytes:
    """The bytes of one image file; duplicates copy ``original``, the actor's first photo."""
    if defect in ("exact_duplicate", "near_duplicate") and original is not None:
        if defect == "exact_duplicate":
            return original.read_bytes()
        with Image.open(original) as image:
            smaller = image.convert("RGB").resize((IMAGE_SIDE - 32, IMAGE_SIDE - 32), Image.LANCZOS)
        return _jpeg(smaller, quality=70)
    drawn = DRAWERS[category](rng, look, palette)
    if defect == "blurry":
        drawn = drawn.filter(ImageFilter.GaussianBlur(8))
    elif defect == "dark":
        drawn = ImageEnhance.Brightness(drawn).enhance(0.15)
    elif defect == "tiny":
        drawn = drawn.resize((64, 64), Image.LANCZOS)
    if defect == "unreadable":
        whole = _jpeg(drawn)
        return whole[: len(whole) * 2 // 5]  # a download cut short
    return _png(drawn) if suffix == ".png" else _jpeg(drawn)


# --- the actor with real faces ------------------------------------------------------------------

FACES_DIR = Path(__file__).resolve().parent / "faces_data"
FACE_DESCRIPTOR = "Barack Obama (public-domain White House photos)"
# Distinct photos only: a mirror or a crop of one photo is a duplicate of it (re-crop check).
FACE_PHOTOS = ("obama_flags", "obama_office")
FACE_PLANTED = {"other_person": "biden", "no_face": "rocket", "face_cut_off": "obama_half_face"}
FACE_BASE = "obama_podium"  # the half face is cut from it: in the set, it would be a duplicate


def _write_face_actor(folder: Path, name: str) -> None:
    """Two good photos, the three planted ones, and two ink drawings and a painting of the
    good photos made by the local generator, in a shuffled order; the base image gives the
    identity."""
    from training_data.generation import GenerationRequest, LocalGenerator

    rng = random.Random(f"{DEMO_SEED}/{name}")
    training_dir = folder / "training_data"
    training_dir.mkdir(parents=True)
    base_dir = folder / "base_image"
    base_dir.mkdir()
    shutil.copyfile(FACES_DIR / f"{FACE_BASE}.jpg", base_dir / f"{name}_base.jpg")
    items: list[tuple[str, str | None, str | None]] = [
        (PHOTO, None, source) for source in FACE_PHOTOS
    ]
    items += [(PHOTO, defect, source) for defect, source in FACE_PLANTED.items()]
    items += [(BW, None, None)] * 2 + [(COLOR, None, None)]
    rng.shuffle(items)
    entries: dict[str, dict[str, Any]] = {}
    for index, (category, defect, source) in enumerate(items, start=1):
        entry: dict[str, Any] = {"type": category}
        if source is not None:
            shutil.copyfile(FACES_DIR / f"{source}.jpg", training_dir / f"{name}_{index}.jpg")
        if defect:
            entry["demo_planted"] = defect
        entries[f"{name}_{index}.jpg"] = entry
    sources = tuple(FACES_DIR / f"{source}.jpg" for source in FACE_PHOTOS)
    generator, variants = LocalGenerator(), {BW: 0, COLOR: 0}
    for index, (category, _, source) in enumerate(items, start=1):
        if source is None:
            prompt, variant = PROMPTS[category], variants[category]
            request = GenerationRequest(Actor(name, folder), category, prompt, sources, variant)
            variants[category] += 1
            (training_dir / f"{name}_{index}.jpg").write_bytes(generator.generate(request))
            entries[f"{name}_{index}.jpg"]["prompt"] = PROMPTS[category]
    _write_json(training_dir / "manifest.json", {"actor_id": name, "images": entries})


# --- drawing -----------------------------------------------------------------------------------

SKIN_TONES: tuple[Color, ...] = (
    (241, 194, 167),
    (224, 172, 138),
    (198, 134, 98),
    (161, 102, 68),
    (118, 74, 48),
    (250, 214, 190),
)
HAIR_COLORS: tuple[Color, ...] = (
    (30, 22, 18),
    (70, 45, 25),
    (120, 80, 40),
    (200, 160, 90),
    (150, 50, 30),
    (90, 90, 95),
)


@dataclass(frozen=True)
class _Palette:
    """Textures made once per dataset from the seed, then cropped at random offsets."""

    grain: Image.Image
    gradient: Image.Image
    hatching: tuple[Image.Image, ...]
    dots: Image.Image

    @classmethod
    def create(cls, rng: random.Random) -> _Palette:
        side = IMAGE_SIDE + 128
        grain = Image.frombytes("L", (side, side), rng.randbytes(side * side))
        return cls(
            grain=grain,
            gradient=Image.linear_gradient("L").resize((96, 96), Image.BILINEAR),
            hatching=tuple(_hatch(side, a) for a in (45, -45, 0, 90)),
            dots=_dots(side),
        )

    def crop(self, texture: Image.Image, rng: random.Random, size: tuple[int, int]) -> Image.Image:
        left, top = rng.randrange(texture.width - size[0]), rng.randrange(texture.height - size[1])
        return texture.crop((left, top, left + size[0], top + size[1]))


def _hatch(side: int, angle: int) -> Image.Image:
    """A mask of parallel ink lines (255 = ink)."""
    big = side * 2
    lines = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(lines)
    for x in range(0, big, 9):
        draw.line((x, 0, x, big), fill=255, width=2)
    rotated = lines.rotate(angle, resample=Image.NEAREST)
    return rotated.crop((side // 2, side // 2, side // 2 + side, side // 2 + side))


def _dots(side: int) -> Image.Image:
    """A manga screen tone: a regular grid of dots (255 = ink)."""
    cell = Image.new("L", (8, 8), 0)
    ImageDraw.Draw(cell).ellipse((2, 2, 5, 5), fill=255)
    tone = Image.new("L", (side, side), 0)
    row = Image.new("L", (side, 8), 0)
    for x in range(0, side, 8):
        row.paste(cell, (x, 0))
    for y in range(0, side, 8):
        tone.paste(row, (0, y))
    return tone


def _random_color(rng: random.Random, saturation: float = 0.5, value: float = 0.85) -> Color:
    hue = rng.random()
    sector = int(hue * 6) % 6
    fraction = hue * 6 - int(hue * 6)
    v = value
    p, q, t = (
        v * (1 - saturation),
        v * (1 - saturation * fraction),
        v * (1 - saturation * (1 - fraction)),
    )
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][sector]
    return (round(rgb[0] * 255), round(rgb[1] * 255), round(rgb[2] * 255))


def _image_size(rng: random.Random) -> tuple[int, int]:
    return (IMAGE_SIDE, IMAGE_SIDE) if rng.random() < 0.7 else (448, 576)


@dataclass(frozen=True)
class _Face:
    """Where the face sits in a picture: centre and half-width, half-height."""

    x: float
    y: float
    rx: float
    ry: float

    @classmethod
    def place(cls, rng: random.Random, size: tuple[int, int], centered: bool = False) -> _Face:
        """A framing (portrait, close-up or wide shot) and a position, so pictures differ."""
        width, height = size
        framing = "centered" if centered else rng.choice(("portrait", "portrait", "close", "wide"))
        if framing == "centered":
            rx, x, y = width * 0.2, width * 0.5, height * 0.45
        elif framing == "close":
            rx = width * rng.uniform(0.27, 0.33)
            x, y = width * rng.uniform(0.38, 0.62), height * rng.uniform(0.42, 0.56)
        elif framing == "wide":
            rx = width * rng.uniform(0.07, 0.11)
            x, y = width * rng.uniform(0.2, 0.8), height * rng.uniform(0.25, 0.6)
        else:
            rx = width * rng.uniform(0.14, 0.22)
            x, y = width * rng.uniform(0.36, 0.64), height * rng.uniform(0.38, 0.54)
        return cls(x=x, y=y, rx=rx, ry=rx * rng.uniform(1.2, 1.4))

    def box(self, grow: float = 1.0, dx: float = 0.0, dy: float = 0.0) -> tuple[float, ...]:
        x, y = self.x + dx * self.rx, self.y + dy * self.ry
        return (x - self.rx * grow, y - self.ry * grow, x + self.rx * grow, y + self.ry * grow)

    def shoulders(self) -> tuple[float, ...]:
        return (
            self.x - self.rx * 2.6,
            self.y + self.ry * 1.15,
            self.x + self.rx * 2.6,
            self.y + self.ry * 3.2,
        )

    def point(self, fx: float, fy: float) -> tuple[float, float]:
        return (self.x + fx * self.rx, self.y + fy * self.ry)


def _draw_features(draw: ImageDraw.ImageDraw, face: _Face, ink: Any, white: Any, line: int) -> None:
    """Eyes, brows, nose and mouth: enough for the picture to read as a face."""
    for side in (-1, 1):
        ex, ey = face.point(0.38 * side, -0.12)
        w, h = face.rx * 0.2, face.ry * 0.07
        draw.ellipse(
            (ex - w, ey - h, ex + w, ey + h), fill=white, outline=ink, width=max(1, line // 2)
        )
        draw.ellipse((ex - h, ey - h, ex + h, ey + h), fill=ink)
        bx, by = face.point(0.38 * side, -0.28)
        draw.line((bx - w, by + h * 0.3, bx + w, by - h * 0.3 * side), fill=ink, width=line)
    nose_top, nose_tip = face.point(0.0, 0.0), face.point(0.06, 0.22)
    draw.line((*nose_top, *nose_tip), fill=ink, width=max(1, line // 2))
    mx, my = face.point(0.0, 0.48)
    draw.arc(
        (mx - face.rx * 0.35, my - face.ry * 0.15, mx + face.rx * 0.35, my + face.ry * 0.1),
        20,
        160,
        fill=ink,
        width=line,
    )


def _draw_photo(
    rng: random.Random, look: _Look, palette: _Palette, centered: bool = False
) -> Image.Image:
    """Photo-like: smooth background, soft out-of-focus shapes, a softly lit face, film grain.

    Drawn at half size and softened there; the last doubling is pixel repetition, which the
    softening and the grain hide and which costs a tenth of a smooth resize at full size.
    """
    size = _image_size(rng)
    half = (size[0] // 2, size[1] // 2)
    small = (size[0] // 8, size[1] // 8)
    gradient = palette.gradient.rotate(rng.uniform(0, 360), resample=Image.BILINEAR)
    gradient = gradient.crop((16, 16, 80, 80)).resize(small, Image.BILINEAR)
    dark, light = _random_color(rng, 0.35, rng.uniform(0.15, 0.5)), _random_color(rng, 0.3, 0.95)
    if rng.random() < 0.5:
        dark, light = light, dark
    background = Image.composite(
        Image.new("RGB", small, light), Image.new("RGB", small, dark), gradient
    )
    draw = ImageDraw.Draw(background)
    for _ in range(rng.randint(3, 7)):
        x, y, r = rng.uniform(0, small[0]), rng.uniform(0, small[1]), rng.uniform(3, small[0] / 3)
        draw.ellipse(
            (x - r, y - r, x + r, y + r), fill=_random_color(rng, 0.4, rng.uniform(0.3, 1))
        )
    picture = background.filter(ImageFilter.GaussianBlur(small[0] / 20)).resize(half, Image.BICUBIC)
    face = _Face.place(rng, half, centered)
    draw = ImageDraw.Draw(picture)
    draw.ellipse(face.shoulders(), fill=_shade(look.accent, rng.uniform(0.5, 1.0)))
    neck = (
        face.x - face.rx * 0.4,
        face.y + face.ry * 0.6,
        face.x + face.rx * 0.4,
        face.y + face.ry * 1.3,
    )
    draw.rectangle(neck, fill=_shade(look.skin, 0.85))
    draw.ellipse(face.box(1.12, dy=-0.12), fill=look.hair)
    draw.ellipse(face.box(), fill=look.skin)
    light_side = rng.choice((-1, 1))
    draw.ellipse(face.box(0.75, dx=0.3 * light_side, dy=-0.05), fill=_shade(look.skin, 1.08))
    _draw_features(draw, face, ink=_shade(look.hair, 0.6), white=(235, 235, 230), line=2)
    picture = picture.filter(ImageFilter.BoxBlur(2)).resize(size, Image.NEAREST)
    grain = palette.crop(palette.grain, rng, size).convert("RGB")
    picture = Image.blend(picture, grain, 0.07)
    if rng.random() < 0.15:
        return ImageOps.grayscale(picture)  # a black-and-white photo is still a photo
    return picture


def _shade(color: Color, factor: float) -> Color:
    return tuple(min(255, round(channel * factor)) for channel in color)  # type: ignore[return-value]


def _draw_bw(rng: random.Random, look: _Look, palette: _Palette) -> Image.Image:
    """Ink on white: outlines, solid blacks, hatching or screen tone for shade."""
    size = _image_size(rng)
    face = _Face.place(rng, size)
    line = rng.choice((3, 4, 6))
    picture = Image.new("L", size, 255)
    shade = _mask(size, _half_plane(size, rng))
    ImageDraw.Draw(shade).ellipse(face.box(1.1), fill=0)
    texture = rng.choice((*palette.hatching, palette.dots))
    picture = ImageChops.subtract(
        picture, ImageChops.multiply(palette.crop(texture, rng, size), shade)
    )
    draw = ImageDraw.Draw(picture)
    for _ in range(rng.randint(1, 4)):
        x, y = rng.uniform(0, size[0]), rng.uniform(0, size[1])
        w, h = rng.uniform(30, 200), rng.uniform(30, 200)
        draw.rectangle((x, y, x + w, y + h), outline=0, width=rng.choice((2, 3)))
    shirt_ink = 0 if rng.random() < 0.5 else 255
    draw.ellipse(face.shoulders(), fill=shirt_ink, outline=0, width=line)
    draw.ellipse(face.box(1.0), fill=255, outline=0, width=line)
    cheek = Image.new("L", size, 0)
    ImageDraw.Draw(cheek).chord(face.box(0.9), 300, 60, fill=255)
    picture = ImageChops.subtract(
        picture, ImageChops.multiply(palette.crop(palette.hatching[0], rng, size), cheek)
    )
    draw = ImageDraw.Draw(picture)
    hair = face.box(1.12, dy=-0.2)
    draw.chord(hair, 180, 360, fill=0)
    for _ in range(rng.randint(4, 9)):
        x = rng.uniform(hair[0], hair[2])
        draw.line(
            (x, hair[1] + face.ry * 0.3, x + rng.uniform(-20, 20), face.y - face.ry * 0.2),
            fill=255,
            width=2,
        )
    for _ in range(rng.randint(6, 14)):
        points = [(rng.uniform(0, size[0]), rng.uniform(0, size[1]))]
        for _ in range(3):
            points.append(
                (points[-1][0] + rng.uniform(-60, 60), points[-1][1] + rng.uniform(-40, 40))
            )
        draw.line(points, fill=0, width=rng.choice((1, 2, 3)))
    _draw_features(draw, face, ink=0, white=255, line=line)
    if ImageStat.Stat(picture).mean[0] > BW_MAX_MEAN:  # mostly paper: tone more of it
        more = _mask(size, _half_plane(size, rng))
        ImageDraw.Draw(more).ellipse(face.box(1.05), fill=0)
        picture = ImageChops.subtract(
            picture, ImageChops.multiply(palette.crop(palette.dots, rng, size), more)
        )
    return picture


def _draw_color(rng: random.Random, look: _Look, palette: _Palette) -> Image.Image:
    """Cel look: flat saturated fills, black outlines, one hard-edged shadow tone."""
    size = _image_size(rng)
    face = _Face.place(rng, size)
    line = rng.choice((3, 4, 5))
    picture = Image.new("RGB", size, _random_color(rng, 0.6, 0.95))
    draw = ImageDraw.Draw(picture)
    draw.polygon(_half_plane(size, rng), fill=_random_color(rng, 0.7, rng.uniform(0.4, 0.8)))
    for _ in range(rng.randint(1, 3)):
        x, y, r = rng.uniform(0, size[0]), rng.uniform(0, size[1]), rng.uniform(20, 120)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=_random_color(rng, 0.6, 0.9))
    for _ in range(rng.randint(2, 5)):
        cx, cy, r = rng.uniform(0, size[0]), rng.uniform(0, size[1] * 0.5), rng.uniform(10, 50)
        star = [
            (
                cx + r * math.cos(a * math.pi / 5) * (1 if a % 2 else 0.45),
                cy + r * math.sin(a * math.pi / 5) * (1 if a % 2 else 0.45),
            )
            for a in range(10)
        ]
        draw.polygon(star, fill=_random_color(rng, 0.9, 1.0), outline=(0, 0, 0))
    draw.ellipse(face.shoulders(), fill=look.accent, outline=(0, 0, 0), width=line)
    draw.chord(
        face.box(1.15, dy=-0.15),
        160,
        380,
        fill=_saturated(look.hair),
        outline=(0, 0, 0),
        width=line,
    )
    draw.ellipse(face.box(), fill=look.skin, outline=(0, 0, 0), width=line)
    _paste_cel_shadow(picture, face, _shade(look.skin, 0.78), rng)
    draw = ImageDraw.Draw(picture)
    _draw_features(draw, face, ink=(0, 0, 0), white=(255, 255, 255), line=line)
    return picture


def _paste_cel_shadow(picture: Image.Image, face: _Face, color: Color, rng: random.Random) -> None:
    """Darken the part of the face beyond a slanted line, working only inside the face's box."""
    left, top, right, bottom = (round(v) for v in face.box(0.95))
    size = (right - left, bottom - top)
    shadow = Image.new("L", size, 0)
    ImageDraw.Draw(shadow).ellipse((0, 0, size[0] - 1, size[1] - 1), fill=255)
    through = (face.rx * rng.uniform(0.5, 1.5), size[1] / 2)
    shadow = ImageChops.multiply(shadow, _mask(size, _half_plane(size, rng, through)))
    picture.paste(color, (left, top), shadow)


def _half_plane(
    size: tuple[int, int], rng: random.Random, through: tuple[float, float] | None = None
) -> list[tuple[float, float]]:
    """A polygon covering everything on one side of a random line across the picture."""
    width, height = size
    angle = rng.uniform(0, 2 * math.pi)
    reach = 2 * (width + height)
    normal = (math.cos(angle) * reach, math.sin(angle) * reach)
    along = (-normal[1], normal[0])
    x, y = through or (width * rng.uniform(0.25, 0.75), height * rng.uniform(0.25, 0.75))
    return [
        (x - along[0], y - along[1]),
        (x + along[0], y + along[1]),
        (x + along[0] + normal[0], y + along[1] + normal[1]),
        (x - along[0] + normal[0], y - along[1] + normal[1]),
    ]


def _mask(size: tuple[int, int], polygon: list[tuple[float, float]]) -> Image.Image:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).polygon(polygon, fill=255)
    return mask


def _saturated(color: Color) -> Color:
    low, high = min(color), max(color)
    if high == low:
        return color
    return tuple(round((c - low) / (high - low) * 220 + 20) for c in color)  # type: ignore[return-value]


DRAWERS: dict[str, Callable[[random.Random, _Look, _Palette], Image.Image]] = {
    PHOTO: _draw_photo,
    BW: _draw_bw,
    COLOR: _draw_color,
}


# --- files -------------------------------------------------------------------------------------


def _jpeg(image: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def _write_json(path: Path, document: Any) -> None:
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
