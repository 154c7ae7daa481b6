"""Generator backends: make one new training image of a category from the actor's photos.

``local`` is offline and Pillow-only: it turns one of the actor's photos into an ink, pencil or
woodcut drawing (``bw_stylized``) or a cel, poster or pop-art painting (``color_stylized``). It
cannot make photorealistic images. It never cuts the face: its crop is placed around the face
found in the source (with room for hair and chin), and zooms out as far as that needs.
``replicate`` calls the Replicate HTTP API. Each request
carries a ``variant`` number that changes the crop, the mirror and the technique, so that two
images of one actor and category are never near-duplicates of each other.

A generator returns JPEG bytes. It raises ``ActorError`` when one image cannot be made and
``FatalRunError`` for a fault that would fail every actor alike (a rejected token, no credit).

Replicate: ``POST {base_url}/models/{model}/predictions`` with ``Prefer: wait=N`` (N <= 60 s) and
input ``{prompt, input_image}`` (the source as a JPEG data URL, at most 1024 px), then polling until
the prediction succeeds, fails or is canceled, then downloading the output at once (Replicate
deletes it after an hour). ``timeout`` covers one image, polling and download included; a
prediction still running at the limit is canceled. 429 and 5xx are retried honouring
``Retry-After``. A create request is sent again only after a 429 or 503 (the server did not take
it); if it timed out or lost its connection the prediction may exist and be billed, so that image
fails instead of paying twice. The token is sent only to the configured API host, never to an
output URL on another host.

Local: each new image of a category gets the next variant number (how many images of that
category were ever generated for the actor), which picks the source, the crop/zoom, the mirror and
the technique; two generated images of an actor are more than 8 of 64 perceptual-hash bits apart
in the tests. A grey, sepia or single-tint photo first gets hues that turn across the picture,
since saturating a tint only gives a stronger tint.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import math
import os
import random
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
from PIL import Image, ImageChops, ImageDraw, ImageEnhance, ImageFilter, ImageOps
from urllib3.exceptions import ConnectTimeoutError

from training_data.config import GeneratorConfig, ReplicateConfig
from training_data.dataset import Actor
from training_data.errors import ActorError, FatalRunError

TOKEN_VARIABLE = "REPLICATE_API_TOKEN"
MAX_SOURCE_PIXELS = 64_000_000
MAX_OUTPUT_BYTES = 52_428_800
OUTPUT_LONG_SIDE = 768
TINT_ONLY_CHROMA = 6.0  # RMS chroma (YCbCr) beyond each brightness band's mean tint
MIN_SOURCE_SIDE = 256  # an upscaled thumbnail would only pass for a training image
ZOOMS = (1.0, 0.8, 0.88, 0.72, 0.94, 0.66)
JPEG_QUALITY = 92
SPOT_BLACK_SHARE = 0.15  # the darkest share of a colour painting is inked solid black
# Room kept around the detected face box (which spans brows to chin), in face heights.
HEAD_ROOM = {"left": 0.35, "top": 0.6, "right": 0.35, "bottom": 0.35}


@dataclass(frozen=True)
class GenerationRequest:
    """One image to make. ``sources`` holds the best photos first, else the base image(s)."""

    actor: Actor
    category: str
    prompt: str
    sources: tuple[Path, ...]
    variant: int


class Generator(Protocol):
    name: str
    model: str | None

    def can_generate(self, category: str) -> bool: ...

    def generate(self, request: GenerationRequest) -> bytes: ...


def make_generator(
    config: GeneratorConfig, session: requests.Session | None = None
) -> Generator | None:
    """The configured backend; ``None`` for ``none``. Replicate needs its token now, not later."""
    if config.backend == "none":
        return None
    if config.backend == "local":
        return LocalGenerator()
    if config.backend == "replicate":
        token = os.environ.get(TOKEN_VARIABLE, "").strip()
        if not token:
            raise FatalRunError(
                f"{TOKEN_VARIABLE} is not set: the replicate generator needs it "
                '(or set generator.backend = "local" or "none" in the config)'
            )
        return ReplicateGenerator(config.replicate, token, session or requests.Session())
    raise FatalRunError(f"unknown generator backend {config.backend!r}")


# ---------------------------------------------------------------------------------------------
# local


class LocalGenerator:
    """Stylized renderings of the actor's own photo, varied by the request's ``variant``."""

    name = "local"
    model = None
    categories = ("bw_stylized", "color_stylized")

    def can_generate(self, category: str) -> bool:
        return category in self.categories

    def generate(self, request: GenerationRequest) -> bytes:
        if not self.can_generate(request.category):
            raise ActorError(f"the local generator cannot make {request.category} images")
        if not request.sources:
            raise ActorError(f"no photo or base image to make a {request.category} image from")
        source = request.sources[request.variant % len(request.sources)]
        picture = read_source(source)
        if min(picture.size) < MIN_SOURCE_SIDE:
            raise ActorError(
                f"source image {source.name} is too small to draw from "
                f"({picture.width}x{picture.height}, under {MIN_SOURCE_SIDE} px)"
            )
        rng = random.Random(f"{request.actor.name}/{request.category}/{request.variant}")
        face = face_box(picture)
        if face is not None:
            picture = _toned_for(picture, face)
        head = _with_head_room(face, picture.size) if face is not None else None
        photo = _framed(picture, request.variant, rng, head)
        render = BW_TECHNIQUES if request.category == "bw_stylized" else COLOR_TECHNIQUES
        technique = render[(request.variant // 2) % len(render)]
        return jpeg_bytes(technique(photo, rng))


def read_source(path: Path) -> Image.Image:
    """Decode a source photo upright in RGB; a broken or oversized file fails this image only."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                if opened.width * opened.height > MAX_SOURCE_PIXELS:
                    raise ActorError(f"source image {path.name} is too large to read")
                opened.draft("RGB", (2 * OUTPUT_LONG_SIDE, 2 * OUTPUT_LONG_SIDE))  # JPEG: faster
                return ImageOps.exif_transpose(opened).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError, Warning) as error:
        raise ActorError(f"cannot read source image {path.name}: {error}") from None


def face_box(photo: Image.Image) -> tuple[int, int, int, int] | None:
    """The largest face's box in ``photo`` pixels, inside the picture; None without a face
    (the crop is then free)."""
    from training_data.faces import search_faces

    small, found = search_faces(photo)
    if not found:
        return None
    scale = photo.width / small.width
    left, top, right, bottom = (value * scale for value in found[0].box)
    return (
        max(0, math.floor(left)),
        max(0, math.floor(top)),
        min(photo.width, math.ceil(right)),
        min(photo.height, math.ceil(bottom)),
    )


def _with_head_room(
    box: tuple[int, int, int, int], size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """The face box widened by HEAD_ROOM (hair, chin, ears), kept inside the picture."""
    left, top, right, bottom = box
    height = bottom - top
    return (
        max(0, math.floor(left - HEAD_ROOM["left"] * height)),
        max(0, math.floor(top - HEAD_ROOM["top"] * height)),
        min(size[0], math.ceil(right + HEAD_ROOM["right"] * height)),
        min(size[1], math.ceil(bottom + HEAD_ROOM["bottom"] * height)),
    )


def _toned_for(photo: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """Levels stretched so that the face spans the tonal range: every technique thresholds
    tones, and a face much lighter or darker than the rest of the picture would dissolve."""
    grey = photo.convert("L").crop(box)
    low, high = _percentile(grey, 0.02), _percentile(grey, 0.98)
    if high - low < 8:
        return photo
    scale = 255 / (high - low)
    return photo.point([min(255, max(0, round((v - low) * scale))) for v in range(256)] * 3)


def _framed(
    photo: Image.Image,
    variant: int,
    rng: random.Random,
    keep: tuple[int, int, int, int] | None = None,
) -> Image.Image:
    """A crop, zoom and mirror chosen by the variant: the main reason two outputs differ. The
    crop holds the ``keep`` box (the head) whole: it zooms out as far as that needs."""
    zoom = ZOOMS[(variant + variant // len(ZOOMS)) % len(ZOOMS)]
    width, height = photo.size
    if keep is not None:
        zoom = max(zoom, (keep[2] - keep[0]) / width, (keep[3] - keep[1]) / height)
    crop_w, crop_h = max(1, round(width * zoom)), max(1, round(height * zoom))
    left_range, top_range = (0, width - crop_w), (0, height - crop_h)
    if keep is not None:
        left_range = (max(0, keep[2] - crop_w), min(keep[0], width - crop_w))
        top_range = (max(0, keep[3] - crop_h), min(keep[1], height - crop_h))
    left = rng.randint(*left_range)
    top = rng.randint(*top_range)
    framed = photo.crop((left, top, left + crop_w, top + crop_h))
    if variant % 2:
        framed = ImageOps.mirror(framed)
    scale = OUTPUT_LONG_SIDE / max(framed.size)
    size = (max(1, round(framed.width * scale)), max(1, round(framed.height * scale)))
    return framed.resize(size, Image.Resampling.LANCZOS)


def _edges(gray: Image.Image, blur: float, threshold: int, width: int) -> Image.Image:
    """Black outlines on white where the smoothed picture changes sharply."""
    edges = gray.filter(ImageFilter.GaussianBlur(blur)).filter(ImageFilter.FIND_EDGES)
    lines = edges.point(lambda value: 0 if value > threshold else 255)
    return lines.filter(ImageFilter.MinFilter(width)) if width > 1 else lines


def _hatching(
    size: tuple[int, int], spacing: int, angle: int, thickness: int, ink: int = 0
) -> Image.Image:
    """Parallel strokes of grey level ``ink`` across the whole canvas, on white."""
    pattern = Image.new("L", size, 255)
    draw = ImageDraw.Draw(pattern)
    width, height = size
    reach = width + height
    for offset in range(-reach, reach, spacing):
        if angle == 0:
            draw.line([(0, offset), (width, offset)], fill=ink, width=thickness)
        elif angle == 90:
            draw.line([(offset, 0), (offset, height)], fill=ink, width=thickness)
        else:
            slope = 1 if angle == 45 else -1
            start = (offset, 0)
            end = (offset + slope * height, height)
            draw.line([start, end], fill=ink, width=thickness)
    return pattern


def _shade(gray: Image.Image, levels: list[tuple[int, Image.Image]]) -> Image.Image:
    """Lay each stroke pattern where the photo is darker than that pattern's level."""
    canvas = Image.new("L", gray.size, 255)
    for level, pattern in levels:
        mask = gray.point(lambda value, level=level: 255 if value < level else 0)
        canvas = ImageChops.darker(canvas, Image.composite(pattern, canvas, mask))
    return canvas


def _ink(photo: Image.Image, rng: random.Random) -> Image.Image:
    gray = ImageOps.autocontrast(photo.convert("L"), cutoff=2)
    outline = _edges(gray, rng.uniform(1.2, 2.2), rng.randint(18, 28), 3)
    cut = rng.randint(45, 70)
    spots = gray.filter(ImageFilter.GaussianBlur(2)).point(lambda value: 0 if value < cut else 255)
    hatch = _shade(gray, [(rng.randint(95, 120), _hatching(gray.size, 7, 45, 1))])
    return ImageChops.darker(ImageChops.darker(outline, spots), hatch).convert("RGB")


def _pencil(photo: Image.Image, rng: random.Random) -> Image.Image:
    """Graphite: light, medium and dark cross-hatching by tone, under dark contour lines.

    Strokes are 2 px wide, so that they stay strokes when the picture is seen smaller.
    """
    gray = ImageOps.autocontrast(photo.convert("L"), cutoff=2)
    spacing = rng.randint(7, 9)
    shading = _shade(
        gray,
        [
            (rng.randint(150, 175), _hatching(gray.size, spacing, 45, 2, ink=150)),
            (rng.randint(100, 120), _hatching(gray.size, spacing, 135, 2, ink=90)),
            (rng.randint(50, 70), _hatching(gray.size, spacing - 2, 0, 2, ink=40)),
        ],
    )
    outline = _edges(gray, rng.uniform(0.8, 1.4), rng.randint(14, 22), 3).point(
        lambda value: 30 if value == 0 else 255
    )
    return ImageChops.darker(shading, outline).convert("RGB")


def _woodcut(photo: Image.Image, rng: random.Random) -> Image.Image:
    gray = ImageOps.autocontrast(photo.convert("L"), cutoff=1)
    local_mean = gray.filter(ImageFilter.BoxBlur(rng.randint(12, 20)))
    lift = rng.randint(4, 10)
    difference = ImageChops.subtract(local_mean, gray, offset=128)
    carved = difference.point(lambda value: 0 if value > 128 + lift else 255)
    grooves = _shade(gray, [(rng.randint(80, 110), _hatching(gray.size, 4, 0, 2))])
    return ImageChops.darker(carved, grooves).convert("RGB")


def _shift_hue(photo: Image.Image, degrees: int) -> Image.Image:
    hue, saturation, value = photo.convert("HSV").split()
    step = round(degrees * 256 / 360)
    hue = hue.point(lambda h: (h + step) % 256)
    return Image.merge("HSV", (hue, saturation, value)).convert("RGB")


def _flat_colors(photo: Image.Image, colors: int, smoothing: float) -> Image.Image:
    """Few flat colour areas; worked at half size, as median cut is slow on large images."""
    half = photo.reduce(2).filter(ImageFilter.GaussianBlur(smoothing))
    palette = half.reduce(4).quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    quantized = half.quantize(palette=palette, dither=Image.Dither.NONE)
    return quantized.convert("RGB").resize(photo.size, Image.Resampling.NEAREST)


def _with_outline(painting: Image.Image, photo: Image.Image, threshold: int, width: int):
    """Inked like a comic: dark outlines, and the darkest share of the picture solid black."""
    gray = photo.convert("L")
    outline = _edges(gray, 1.6, threshold, width)
    cut = _percentile(gray.filter(ImageFilter.GaussianBlur(2)), SPOT_BLACK_SHARE)
    spots = gray.filter(ImageFilter.GaussianBlur(2)).point(lambda value: 0 if value <= cut else 255)
    return ImageChops.multiply(painting, ImageChops.darker(outline, spots).convert("RGB"))


def _percentile(gray: Image.Image, share: float) -> int:
    histogram = gray.histogram()
    wanted, seen = share * sum(histogram), 0
    for level, count in enumerate(histogram):
        seen += count
        if seen >= wanted:
            return level
    return 255


def _coloured(photo: Image.Image, rng: random.Random) -> Image.Image:
    """A photo whose colour is only a tint (grey, sepia, a blue night) gets colours painted in.

    Saturating a tint gives a stronger tint, still one colour per brightness: a monochrome
    picture. Hues that turn across the picture make it a colour one.
    """
    if not _tint_only(photo):
        return photo
    return _hue_sweep(photo, rng, span=200, saturation_floor=170)


def _tint_only(photo: Image.Image) -> bool:
    """True when each brightness band has a single colour: the chroma beyond it is tiny."""
    pixels = photo.reduce(8).convert("YCbCr").tobytes()
    bands: dict[int, list[tuple[int, int]]] = {}
    for start in range(0, len(pixels), 3):
        luma, blue, red = pixels[start : start + 3]
        bands.setdefault(luma // 32, []).append((blue, red))
    spread = total = 0.0
    for chromas in bands.values():
        mean_blue = sum(blue for blue, _ in chromas) / len(chromas)
        mean_red = sum(red for _, red in chromas) / len(chromas)
        spread += sum((blue - mean_blue) ** 2 + (red - mean_red) ** 2 for blue, red in chromas)
        total += len(chromas)
    return (spread / total) ** 0.5 < TINT_ONLY_CHROMA


def _hue_sweep(
    image: Image.Image, rng: random.Random, span: int, saturation_floor: int
) -> Image.Image:
    """Turn the hue further and further across the picture (direction by ``rng``)."""
    hue, saturation, value = image.convert("HSV").split()
    ramp = Image.linear_gradient("L").rotate(rng.choice((0, 90, 180, 270))).resize(image.size)
    hue = ImageChops.add_modulo(hue, ramp.point(lambda level: level * span // 360))
    saturation = saturation.point(lambda level: max(level, saturation_floor))
    return Image.merge("HSV", (hue, saturation, value)).convert("RGB")


def _cel(photo: Image.Image, rng: random.Random) -> Image.Image:
    vivid = ImageEnhance.Color(_coloured(photo, rng)).enhance(rng.uniform(1.6, 2.1))
    painting = _flat_colors(_shift_hue(vivid, rng.randint(-25, 25)), rng.randint(4, 6), 1.5)
    return _with_outline(painting, photo, rng.randint(16, 24), 3)


def _poster(photo: Image.Image, rng: random.Random) -> Image.Image:
    vivid = ImageEnhance.Color(ImageOps.autocontrast(_coloured(photo, rng), cutoff=2)).enhance(2.2)
    posterized = ImageOps.posterize(vivid.filter(ImageFilter.GaussianBlur(2.5)), 2)
    painting = _shift_hue(_flat_colors(posterized, 6, 0.5), rng.choice((40, 140, 200, 300)))
    return _with_outline(painting, photo, 20, 1)


def _pop(photo: Image.Image, rng: random.Random) -> Image.Image:
    gray = ImageOps.autocontrast(photo.convert("L"), cutoff=2)
    hues = rng.sample(range(0, 360, 30), 3)
    dark, middle, light = (
        _hsv_color(hue, value) for hue, value in zip(hues, (90, 180, 250), strict=True)
    )
    bands = gray.filter(ImageFilter.GaussianBlur(2)).point(
        lambda value: 0 if value < 85 else (1 if value < 170 else 2)
    )
    painting = ImageOps.colorize(
        bands.point(lambda band: band * 127), black=dark, mid=middle, white=light, midpoint=127
    )
    return _with_outline(painting, photo, 22, 3)


def _hsv_color(hue: int, value: int) -> tuple[int, int, int]:
    pixel = Image.new("HSV", (1, 1), (round(hue * 256 / 360) % 256, 230, value))
    return pixel.convert("RGB").getpixel((0, 0))


BW_TECHNIQUES: tuple[Callable[[Image.Image, random.Random], Image.Image], ...] = (
    _ink,
    _pencil,
    _woodcut,
)
COLOR_TECHNIQUES: tuple[Callable[[Image.Image, random.Random], Image.Image], ...] = (
    _cel,
    _poster,
    _pop,
)


def jpeg_bytes(image: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# replicate

TERMINAL_STATUSES = ("succeeded", "failed", "canceled")
MAX_SYNC_WAIT = 60
CONNECT_TIMEOUT = 10.0


class ReplicateGenerator:
    """Replicate's HTTP API: create a prediction (sync wait), poll it, download its output at once.

    A create request is sent at most once per image unless the server said it did not take it
    (429, 503): a create that timed out or lost its connection may exist and be billed, so that
    image fails rather than risk paying twice.
    """

    name = "replicate"

    def __init__(
        self,
        config: ReplicateConfig,
        token: str,
        session: requests.Session,
        poll_interval: float = 1.0,
        max_poll_interval: float = 5.0,
    ) -> None:
        self.config = config
        self.model = config.model
        self._token = token
        self._session = session
        self._base_url = config.base_url.rstrip("/")
        self._poll_interval = poll_interval
        self._max_poll_interval = max_poll_interval

    def can_generate(self, category: str) -> bool:
        return True

    def generate(self, request: GenerationRequest) -> bytes:
        if not request.sources:
            raise ActorError(f"no photo or base image to make a {request.category} image from")
        deadline = time.monotonic() + self.config.timeout
        source = request.sources[request.variant % len(request.sources)]
        body = {"input": {"prompt": request.prompt, "input_image": _data_url(source)}}
        prediction = self._create(body, deadline)
        prediction = self._wait(prediction, deadline)
        data = self._download(_output_url(prediction), deadline)
        return _as_jpeg(data, f"output of Replicate prediction {prediction.get('id')}")

    # -- the three phases ---------------------------------------------------------------------

    def _create(self, body: dict[str, Any], deadline: float) -> dict[str, Any]:
        url = f"{self._base_url}/models/{self.model}/predictions"
        attempt = 0
        while True:
            remaining = _time_left(deadline, "before its prediction was created")
            sync_wait = max(1, min(MAX_SYNC_WAIT, int(remaining) - 5))
            headers = self._headers() | {"Prefer": f"wait={sync_wait}"}
            try:
                response = self._session.post(
                    url,
                    json=body,
                    headers=headers,
                    timeout=(min(CONNECT_TIMEOUT, remaining), min(remaining, sync_wait + 10.0)),
                )
            except requests.RequestException as error:
                if not _never_sent(error):
                    raise ActorError(
                        "Replicate did not answer the create request "
                        f"({type(error).__name__}); not sent again, as it may already be running "
                        "and billed"
                    ) from None
                attempt += 1
                self._pause_or_give_up(None, attempt, deadline, f"cannot connect to {url}")
                continue
            if response.status_code in (429, 503):
                attempt += 1
                self._pause_or_give_up(response, attempt, deadline, "Replicate is busy")
                continue
            self._check_status(response, "create a prediction")
            return self._prediction(response)

    def _wait(self, prediction: dict[str, Any], deadline: float) -> dict[str, Any]:
        interval = self._poll_interval
        attempt = 0
        while prediction.get("status") not in TERMINAL_STATUSES:
            if time.monotonic() + interval >= deadline:
                self._cancel(prediction)
                raise ActorError(
                    f"Replicate prediction {prediction.get('id')} did not finish within "
                    f"{self.config.timeout:g} s (canceled)"
                )
            time.sleep(interval)
            interval = min(self._max_poll_interval, interval * 1.5)
            try:
                response = self._session.get(
                    self._poll_url(prediction),
                    headers=self._headers(),
                    timeout=(CONNECT_TIMEOUT, max(1.0, deadline - time.monotonic())),
                )
            except requests.RequestException:
                attempt += 1
                self._pause_or_give_up(None, attempt, deadline, "cannot reach Replicate")
                continue
            if response.status_code == 429 or response.status_code >= 500:
                attempt += 1
                self._pause_or_give_up(response, attempt, deadline, "Replicate is busy")
                continue
            self._check_status(response, f"read prediction {prediction.get('id')}")
            prediction = self._prediction(response)
        status = prediction["status"]
        if status != "succeeded":
            detail = _redact(str(prediction.get("error") or "no reason given"), self._token)
            raise ActorError(f"Replicate prediction {prediction.get('id')} {status}: {detail}")
        return prediction

    def _download(self, url: str, deadline: float) -> bytes:
        if url.startswith("data:"):
            return _data_url_bytes(url)
        attempt = 0
        while True:
            remaining = _time_left(deadline, "while downloading its output")
            headers = self._headers() if _same_origin(url, self._base_url) else {}
            try:
                with self._session.get(
                    url, headers=headers, stream=True, timeout=(CONNECT_TIMEOUT, remaining)
                ) as response:
                    if response.status_code == 429 or response.status_code >= 500:
                        attempt += 1
                        self._pause_or_give_up(response, attempt, deadline, "output not served")
                        continue
                    if response.status_code != 200:
                        raise ActorError(
                            f"cannot download the Replicate output (HTTP {response.status_code})"
                        )
                    return _read_body(response, deadline)
            except requests.RequestException as error:
                attempt += 1
                reason = f"cannot download the Replicate output ({type(error).__name__})"
                self._pause_or_give_up(None, attempt, deadline, reason)

    # -- helpers ------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    def _poll_url(self, prediction: dict[str, Any]) -> str:
        """The prediction's own ``urls.get``, unless it points elsewhere than the API (token)."""
        own = (prediction.get("urls") or {}).get("get")
        if isinstance(own, str) and _same_origin(own, self._base_url):
            return own
        return f"{self._base_url}/predictions/{prediction['id']}"

    def _cancel(self, prediction: dict[str, Any]) -> None:
        """Stop paying for a prediction we no longer wait for; best effort."""
        own = (prediction.get("urls") or {}).get("cancel")
        url = own if isinstance(own, str) and _same_origin(own, self._base_url) else None
        url = url or f"{self._base_url}/predictions/{prediction.get('id')}/cancel"
        with contextlib.suppress(requests.RequestException):
            self._session.post(url, headers=self._headers(), timeout=CONNECT_TIMEOUT)

    def _prediction(self, response: requests.Response) -> dict[str, Any]:
        try:
            prediction = response.json()
        except ValueError:
            prediction = None
        if not isinstance(prediction, dict) or not isinstance(prediction.get("id"), str):
            raise ActorError("Replicate answered with something that is not a prediction")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", prediction["id"]):
            raise ActorError("Replicate answered with a malformed prediction id")
        return prediction

    def _check_status(self, response: requests.Response, doing: str) -> None:
        status = response.status_code
        if status in (200, 201, 202):
            return
        detail = _redact(_error_detail(response), self._token)
        if status in (401, 403):
            raise FatalRunError(
                f"Replicate rejected the API token (HTTP {status}): check {TOKEN_VARIABLE}"
            )
        if status == 402:
            raise FatalRunError(f"Replicate refused to run: out of credit (HTTP 402) {detail}")
        if status == 404 and doing == "create a prediction":
            raise FatalRunError(
                f"Replicate model {self.model} not found at {self._base_url} (HTTP 404)"
            )
        raise ActorError(f"Replicate could not {doing} (HTTP {status}) {detail}".rstrip())

    def _pause_or_give_up(
        self, response: requests.Response | None, attempt: int, deadline: float, reason: str
    ) -> None:
        """Wait as the server asks (Retry-After) or back off, unless that passes the deadline."""
        delay = _retry_after(response) if response is not None else None
        if delay is None:
            delay = min(30.0, self._poll_interval * 2 ** (attempt - 1))
        if time.monotonic() + delay >= deadline:
            status = f" (HTTP {response.status_code})" if response is not None else ""
            raise ActorError(f"{reason}{status}; gave up within {self.config.timeout:g} s")
        time.sleep(delay)


def _never_sent(error: requests.RequestException) -> bool:
    """True when the connection failed before the request left: safe to send it again."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    if isinstance(error, requests.ConnectionError) and error.args:
        reason = getattr(error.args[0], "reason", None)
        return isinstance(reason, ConnectTimeoutError)
    return False


def _time_left(deadline: float, when: str) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise ActorError(f"Replicate image timed out {when}")
    return remaining


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def _error_detail(response: requests.Response) -> str:
    try:
        document = response.json()
    except ValueError:
        return ""
    if isinstance(document, dict):
        detail = document.get("detail") or document.get("title") or ""
        return f"- {str(detail)[:200]}" if detail else ""
    return ""


def _redact(text: str, token: str) -> str:
    return text.replace(token, "***") if token else text


def _same_origin(url: str, base_url: str) -> bool:
    one, two = urlsplit(url), urlsplit(base_url)
    return (one.scheme, one.netloc) == (two.scheme, two.netloc)


def _output_url(prediction: dict[str, Any]) -> str:
    output = prediction.get("output")
    if isinstance(output, list) and output:
        output = output[0]
    if isinstance(output, str) and output.startswith(("https://", "http://", "data:")):
        return output
    raise ActorError(f"Replicate prediction {prediction.get('id')} succeeded without an image")


def _read_body(response: requests.Response, deadline: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(chunk_size=65536):
        size += len(chunk)
        if size > MAX_OUTPUT_BYTES:
            raise ActorError(f"the Replicate output is larger than {MAX_OUTPUT_BYTES} bytes")
        if time.monotonic() > deadline:
            raise ActorError("Replicate image timed out while downloading its output")
        chunks.append(chunk)
    return b"".join(chunks)


def _data_url(path: Path) -> str:
    """The source as a data URL, scaled down so the request stays small."""
    image = read_source(path)
    image.thumbnail((1024, 1024), Image.Resampling.LANCZOS)
    encoded = base64.b64encode(jpeg_bytes(image, quality=90)).decode("ascii")
    return f"data:image/jpeg;base64,{encoded}"


def _data_url_bytes(url: str) -> bytes:
    header, _, payload = url.partition(",")
    if not header.endswith(";base64"):
        raise ActorError("the Replicate output is a data URL that is not base64")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ActorError("the Replicate output is a malformed data URL") from None


def _as_jpeg(data: bytes, what: str) -> bytes:
    """Check the bytes decode as an image; keep a JPEG as it is, convert anything else."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as opened:
                if opened.width * opened.height > MAX_SOURCE_PIXELS:
                    raise ActorError(f"the {what} is too large")
                opened.load()
                if opened.format == "JPEG":
                    return data
                return jpeg_bytes(opened)
    except (OSError, ValueError, Image.DecompressionBombError, Warning) as error:
        raise ActorError(f"the {what} is not a readable image: {error}") from None
