"""The subject checks: is there one face, big, sharp and whole, and is it the actor's.

``inspect`` (per image, cached with the verdict) finds the faces on the working image and
measures the main (largest) one: its box, height share, sharpness, brightness, whether it is
cut off by the border, and its embedding. ``review`` (per actor, every run) decides the issues:

- An actor is taken for a person only when its reference picture (``base_image/``) shows a face
  or at least ``min_face_share`` of its photos do. Otherwise (a set of objects, drawings, or
  faces the detector cannot see) no subject issue is raised: removing every photo for
  ``no_face`` would act on a verdict the tool cannot back.
- Photos where the first look found no face get a closer look (upsampled twice: faces down to
  6% of the height, about 57 ms each), so a full-body shot is ``face_too_small``, not
  ``no_face``.
- The identity is the mean embedding of the faces in ``base_image/``, else the element-wise
  median of the photos' embeddings (from 3 faces on); each face's distance to it is recorded,
  and above ``identity_threshold`` (a drawing: ``stylized_identity_threshold``) the image is
  ``other_person``. Drawings the local generator made of one person's photos came out 0.62-0.77
  from that person's identity, the other person's photo 0.74: on drawings only a far face says
  anything.
- A manifest with ``"subject_checks": false`` turns them off for its actor (a non-person actor
  in a dataset of people; the demo's drawn actors).
- The score blends the frame's score with the face's (size 45%, sharpness 40%, exposure 15%),
  then every issue's cap applies.

On photorealistic images ``no_face``, ``face_cut_off`` and ``other_person`` make an image
unusable; on stylized ones detectors and embeddings are unreliable (14 of 252 pairs of
different painted characters came out under 0.6), so there they only lower the score.
"""

from __future__ import annotations

import logging
import math
import statistics
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, ImageStat

from training_data import faces
from training_data.checks import (
    ActorImages,
    Check,
    Finding,
    ImageView,
    Reviewed,
    capped,
    sharpness,
)
from training_data.config import SubjectConfig

log = logging.getLogger(__name__)

SUBJECT_CHECK_NAME = "subject"
PHOTO_CATEGORY = "photorealistic"
ISSUES = (
    "no_face",
    "multiple_faces",
    "face_too_small",
    "face_cut_off",
    "face_blurry",
    "other_person",
)
PHOTO_ONLY = frozenset({PHOTO_CATEGORY})
UNUSABLE = {"no_face": PHOTO_ONLY, "face_cut_off": PHOTO_ONLY, "other_person": PHOTO_ONLY}
SCORE_CAPS = {
    "other_person": 2,
    "no_face": 3,
    "face_cut_off": 4,
    "face_blurry": 4,
    "face_too_small": 5,
    "multiple_faces": 5,
}
MIN_FACES_FOR_MEDIAN = 3
FULL_FACE_HEIGHT = 0.30  # a face this share of the image height (a head shot) scores full size
BORDER_TOLERANCE = 1  # px of the working image: a box this close to the border touches it
EMBEDDING_DECIMALS = 4


def inspect(view: ImageView, subject: SubjectConfig) -> Finding:
    return Finding(measurements={"face": face_measurements(view, subject)})


def face_measurements(view: ImageView, subject: SubjectConfig) -> dict[str, Any]:
    """``measurements["face"]``: the faces counted (from ``counted_face_ratio`` of the main
    face's height), the main face's box (relative 0..1), its share of the image height,
    sharpness, brightness, whether it is cut off, and its embedding (for the review).

    The face's sharpness is the frame's measure on the face crop; measured on packaged
    portraits: sharp 55-100, softened by 1 px 21-38."""
    if not view.faces or view.face_crop is None:
        return {"count": 0, "box": None, "height_ratio": 0.0, "sharpness": 0.0}
    width, height = view.working.size
    main = view.faces[0]
    left, top, right, bottom = main.box
    counted = [
        face for face in view.faces if face.height >= subject.counted_face_ratio * main.height
    ]
    return {
        "count": len(counted),
        "box": [
            round(min(max(left / width, 0.0), 1.0), 4),
            round(min(max(top / height, 0.0), 1.0), 4),
            round(min(max(right / width, 0.0), 1.0), 4),
            round(min(max(bottom / height, 0.0), 1.0), 4),
        ],
        "height_ratio": round(main.height / height, 4),
        "sharpness": round(sharpness(view.face_crop), 2),
        "brightness": round(ImageStat.Stat(view.face_crop).mean[0], 1),
        "cut_off": cut_off(main, (width, height)),
        "embedding": [round(value, EMBEDDING_DECIMALS) for value in view.embedding or ()],
    }


def cut_off(face: faces.Face, size: tuple[int, int]) -> bool:
    """The box or a landmark touches or crosses the border."""
    width, height = size
    left, top, right, bottom = face.box
    points = [(left, top), (right, bottom), *face.landmarks]
    return any(
        x < BORDER_TOLERANCE
        or y < BORDER_TOLERANCE
        or x > width - 1 - BORDER_TOLERANCE
        or y > height - 1 - BORDER_TOLERANCE
        for x, y in points
    )


# --- the actor's set ------------------------------------------------------------------------------


def review(
    images: Sequence[Reviewed], subject: SubjectConfig, actor: ActorImages
) -> dict[str, Any] | None:
    checked = [image for image in images if "face" in image.measurements]
    if not checked:
        return None
    for image in checked:  # a copy: the cached verdict's measurements stay as they were
        image.measurements["face"] = dict(image.measurements["face"])
    references = [e for e in map(reference_embedding, actor.references) if e is not None]
    photos = [image for image in checked if image.type == PHOTO_CATEGORY]
    pool = photos or checked
    with_face = sum(1 for image in pool if image.measurements["face"]["count"])
    share = with_face / len(pool)
    summary: dict[str, Any] = {"face_share": round(share, 3), "reference_faces": len(references)}
    if not references and share < subject.min_face_share:
        _unjudged(checked)
        return summary | {"person": False, "identity": None}
    for image in photos:
        if not image.measurements["face"]["count"] and image.number in actor.working:
            _look_closer(image, actor.working[image.number], subject)
    identity, source = _identity(references, photos)
    for image in checked:
        _judge(image, subject, identity, actor.score_caps)
    return summary | {"person": True, "identity": source}


def _unjudged(images: Sequence[Reviewed]) -> None:
    """Measured, but not a person: the embedding is dropped, no distance is recorded."""
    for image in images:
        image.measurements["face"].pop("embedding", None)
        image.measurements["face"]["identity_distance"] = None


def _look_closer(image: Reviewed, working: Image.Image, subject: SubjectConfig) -> None:
    view = ImageView(
        working, working.width, working.height, PHOTO_CATEGORY, faces.CLOSER_LOOK_UPSAMPLE
    )
    if view.faces:
        image.measurements["face"] = face_measurements(view, subject) | {"closer_look": True}


def _identity(
    references: list[tuple[float, ...]], photos: Sequence[Reviewed]
) -> tuple[tuple[float, ...] | None, str | None]:
    """The base image's faces (mean), else the median of the photos' faces (3 or more)."""
    if references:
        return tuple(statistics.fmean(values) for values in zip(*references, strict=True)), (
            "base_image"
        )
    embeddings = [
        image.measurements["face"]["embedding"]
        for image in photos
        if image.measurements["face"].get("embedding")
    ]
    if len(embeddings) < MIN_FACES_FOR_MEDIAN:
        return None, None
    return tuple(statistics.median(values) for values in zip(*embeddings, strict=True)), "median"


def _judge(
    image: Reviewed,
    subject: SubjectConfig,
    identity: tuple[float, ...] | None,
    caps: Mapping[str, int],
) -> None:
    face = image.measurements["face"]
    embedding = face.pop("embedding", None)
    face["identity_distance"] = (
        round(faces.distance(identity, tuple(embedding)), 3) if identity and embedding else None
    )
    issues = face_issues(face, subject, image.type == PHOTO_CATEGORY)
    image.issues = [*image.issues, *issues]
    if face["count"]:
        blended = (image.quality_score + face_score(face, subject)) / 2
        image.quality_score = min(10, max(1, math.floor(blended + 0.5)))
    image.quality_score = capped(image.quality_score, image.issues, caps)


def face_issues(face: dict[str, Any], subject: SubjectConfig, photo: bool = True) -> list[str]:
    """The subject issues of one image's (reviewed) face measurements, by threshold; a drawing
    (``photo`` False) is another person only further away."""
    if not face["count"]:
        return ["no_face"]
    issues = []
    if face["count"] > 1:
        issues.append("multiple_faces")
    if face["height_ratio"] < subject.min_face_height:
        issues.append("face_too_small")
    if face.get("cut_off"):
        issues.append("face_cut_off")
    if face["sharpness"] < subject.face_blur_threshold:
        issues.append("face_blurry")
    distance = face.get("identity_distance")
    threshold = subject.identity_threshold if photo else subject.stylized_identity_threshold
    if distance is not None and distance > threshold:
        issues.append("other_person")
    return issues


def face_score(face: dict[str, Any], subject: SubjectConfig) -> float:
    """1-10: a large, sharp, well-exposed face scores high."""
    size = _unit(face["height_ratio"] / FULL_FACE_HEIGHT)
    threshold = subject.face_blur_threshold
    sharpness = _unit((face["sharpness"] - threshold) / (2 * threshold))
    exposure = _unit(1 - abs(face.get("brightness", 128) - 128) / 100)
    return 1 + 9 * (0.45 * size + 0.40 * sharpness + 0.15 * exposure)


def reference_embedding(path: Path) -> tuple[float, ...] | None:
    """The main face of a reference picture, found as on a working image; None without one."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                opened.draft("RGB", (faces.SEARCH_SIDE, faces.SEARCH_SIDE))
                picture = ImageOps.exif_transpose(opened).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError, Warning) as error:
        log.warning("base image %s cannot be read for the identity: %s", path.name, error)
        return None
    small, found = faces.search_faces(picture)
    return faces.embedding(small, found[0]) if found else None


def _unit(value: float) -> float:
    return min(max(value, 0.0), 1.0)


SUBJECT_CHECK = Check(
    name=SUBJECT_CHECK_NAME,
    section="subject",
    issues=ISSUES,
    needs=frozenset({"working", "faces", "face_crop", "embedding"}),
    inspect=inspect,
    review=review,
    score_caps=SCORE_CAPS,
    unusable=UNUSABLE,
)
