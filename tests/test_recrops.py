"""Re-crops of one photo are duplicates, other shots of the same people are not."""

from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path

from conftest import REPO, run_cli
from PIL import Image, ImageOps

from training_data import recrops
from training_data.config import Config, QualityConfig, TargetConfig
from training_data.dataset import TrainingImage
from training_data.evaluation import (
    EvaluationCache,
    ImageEvaluation,
    LocalBackend,
    decode_working_image,
    evaluate_actor,
    find_duplicates,
    fingerprint_of,
)
from training_data.plan import make_plan
from training_data.recrops import RecropDetector

SCENES = REPO / "tests" / "data" / "recrops"
STYLES = REPO / "tests" / "data" / "styles"


def scene(name: str) -> Image.Image:
    return Image.open(SCENES / f"{name}.jpg").convert("RGB")


def cut(photo: Image.Image, box: tuple[float, float, float, float], side: int) -> Image.Image:
    """The part of ``photo`` inside ``box`` (fractions of its size), resized to ``side`` px."""
    width, height = photo.size
    left, top, right, bottom = box
    part = photo.crop(
        (round(left * width), round(top * height), round(right * width), round(bottom * height))
    )
    scale = side / max(part.size)
    return part.resize((round(part.width * scale), round(part.height * scale)))


def jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def working(image: Image.Image, quality: int = 90) -> Image.Image:
    return decode_working_image(jpeg(image, quality))[0]


def same(first: Image.Image, second: Image.Image) -> bool:
    return RecropDetector({1: working(first), 2: working(second)}).same_picture(1, 2)


# --- the detector on real photos --------------------------------------------------------------


def test_crops_mirrors_re_encodes_and_resizes_of_one_photo_are_the_same_picture():
    photo = scene("basketball__basketball1")
    wide = cut(photo, (0.05, 0.0, 0.95, 0.95), 600)  # keeps 85%
    close = ImageOps.mirror(cut(photo, (0.0, 0.1, 0.72, 0.82), 300))  # keeps 52%, mirrored
    assert same(photo, wide)
    assert same(photo, close)
    assert same(wide, close)
    assert same(working(photo, 95), working(photo.resize((400, 300)), 60))


def test_other_shots_of_the_same_people_in_a_similar_pose_are_not():
    pairs = [
        ("basketball__basketball1", "basketball__basketball2"),
        ("chessboard__left01", "chessboard__left02"),
        ("chessboard__left01", "chessboard__right01"),
    ]
    for first, second in pairs:
        assert not same(scene(first), scene(second)), (first, second)
        cropped = cut(scene(second), (0.05, 0.05, 0.95, 0.95), 420)
        assert not same(scene(first), cropped), (first, second, "cropped")


def test_a_flat_subject_moved_on_a_smooth_backdrop_with_new_grain_is_not_a_re_crop():
    """Everything but the grain agrees once aligned on the subject: two exposures, not one."""
    first, second = (Image.open(SCENES / "synthetic" / f"moved_{n}.jpg") for n in "ab")
    assert not same(first, second)


def test_unrelated_photos_and_a_grey_copy_are_not_re_crops():
    photo = Image.open(STYLES / "photorealistic" / "opencv__messi.jpg").convert("RGB")
    other = Image.open(STYLES / "photorealistic" / "skimage__astronaut.jpg").convert("RGB")
    assert not same(photo, other)
    assert not same(photo, ImageOps.grayscale(photo).convert("RGB"))


def test_an_image_without_any_texture_matches_nothing():
    flat = Image.new("RGB", (300, 300), (120, 90, 60))
    assert not same(flat, flat.resize((200, 200)))


# --- which one of a duplicate group stays -------------------------------------------------------


def evaluation(
    number: int,
    *,
    score: int = 7,
    size: tuple[int, int] = (1000, 1000),
    face: dict | None = None,
    issues: list[str] | None = None,
) -> ImageEvaluation:
    measurements = {"face": face} if face is not None else {}
    return ImageEvaluation(
        number=number,
        filename=f"a_{number}.jpg",
        type="photorealistic",
        quality_score=score,
        issues=issues or [],
        width=size[0],
        height=size[1],
        sha256=f"{number:064x}",
        measurements=measurements,
    )


def kept_of(images: list[ImageEvaluation]) -> list[int]:
    """Numbers not flagged when every image is declared the same picture as every other."""
    fingerprint = fingerprint_of(Image.new("RGB", (32, 32)))
    fingerprints = dict.fromkeys((image.number for image in images), fingerprint)
    duplicates = find_duplicates(images, fingerprints, -1, lambda first, second: True)
    return [image.number for image in images if image.number not in duplicates]


def face(height_ratio: float, sharpness: float = 50.0) -> dict:
    return {
        "count": 1,
        "box": [0.3, 0.2, 0.7, 0.7],
        "height_ratio": height_ratio,
        "sharpness": sharpness,
        "identity_distance": None,
    }


def test_the_close_up_that_shows_the_face_best_stays_even_at_a_lower_score():
    wide = evaluation(1, score=8, size=(2000, 1500), face=face(0.18))
    close_up = evaluation(2, score=7, size=(800, 800), face=face(0.55))
    assert kept_of([wide, close_up]) == [2]


def test_among_equal_faces_the_sharper_face_stays_then_the_quality_score():
    blurred = evaluation(1, face=face(0.50, sharpness=10.0))
    sharp = evaluation(2, face=face(0.52, sharpness=80.0))
    assert kept_of([blurred, sharp]) == [2]
    lower = evaluation(3, score=6, face=face(0.50))
    higher = evaluation(4, score=8, face=face(0.50))
    assert kept_of([lower, higher]) == [4]


def test_a_face_with_a_face_issue_loses_to_one_without():
    cut_off = evaluation(1, face=face(0.9), issues=["face_cut_off"])
    whole = evaluation(2, face=face(0.4))
    assert kept_of([cut_off, whole]) == [2]


def test_without_faces_the_higher_score_then_more_pixels_stay_not_the_first_number():
    assert kept_of([evaluation(1, score=6), evaluation(2, score=8)]) == [2]
    small = evaluation(1, size=(600, 600))
    large = evaluation(2, size=(1200, 900))
    assert kept_of([small, large]) == [2]
    assert kept_of([evaluation(3), evaluation(4)]) == [3]


def test_surplus_on_a_tie_removes_the_image_that_shows_the_face_worst():
    close_up = evaluation(1, score=6, face=face(0.6))
    distant = evaluation(2, score=6, face=face(0.1))
    others = [evaluation(number, score=9) for number in range(3, 5)]
    target = TargetConfig(total=3, mix={"photorealistic": 1.0})
    plan = make_plan([close_up, distant, *others], target)
    assert [removal.number for removal in plan.removals] == [2]


# --- end to end ----------------------------------------------------------------------------------


def write_actor_files(data_dir: Path) -> dict[str, str]:
    """An actor of 20 typed images: two re-crops of one photo, another shot of the same people,
    and 17 other real photos and drawings. Returns filename -> what it is."""
    training = data_dir / "actors" / "0000_actor" / "training_data"
    training.mkdir(parents=True)
    photo = scene("basketball__basketball1")
    made = {
        "0000_actor_1.jpg": (cut(photo, (0.05, 0.0, 0.95, 0.95), 480), "re-crop"),
        "0000_actor_2.jpg": (ImageOps.mirror(cut(photo, (0.0, 0.1, 0.72, 0.82), 400)), "re-crop"),
        "0000_actor_3.jpg": (scene("basketball__basketball2"), "other shot"),
    }
    for name, (image, _) in made.items():
        image.save(training / name, quality=88)
    kinds = {name: (what, "photorealistic") for name, (_, what) in made.items()}
    photos = ["opencv__building", "opencv__butterfly", "opencv__dog", "opencv__home",
              "opencv__orange", "opencv__plant", "skimage__astronaut", "skimage__coffee",
              "sklearn__china", "matplotlib__grace_hopper"]  # fmt: skip
    sources = [
        *(STYLES / "photorealistic" / f"{name}.jpg" for name in photos),
        *sorted((STYLES / "bw_stylized").glob("*.jpg"))[:4],
        *sorted((STYLES / "color_stylized").glob("*.jpg"))[:3],
    ]
    for number, source in enumerate(sources, start=4):
        name = f"0000_actor_{number}.jpg"
        shutil.copyfile(source, training / name)
        kinds[name] = ("other", source.parent.name)
    manifest = {"actor_id": "0000_actor", "images": {n: {"type": k} for n, (_, k) in kinds.items()}}
    (training / "manifest.json").write_text(json.dumps(manifest))
    return {name: what for name, (what, _) in kinds.items()}


def test_the_plan_removes_one_re_crop_and_keeps_the_other_shot(tmp_path):
    roles = write_actor_files(tmp_path / "data")
    out = tmp_path / "out"
    config = tmp_path / "config.toml"
    config.write_text("[quality]\nmin_side = 128\n")  # the library images are 320 px
    data = tmp_path / "data"
    result = run_cli(
        "--all", "--config", config, "--data-dir", data, "--output-dir", out, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads((out / "0000_actor_evaluation.json").read_text())
    by_name = {image["filename"]: image for image in document["images"]}
    duplicates = [name for name, image in by_name.items() if "duplicate" in image["issues"]]
    assert len(duplicates) == 1 and roles[duplicates[0]] == "re-crop"
    removed = {entry["filename"]: entry["reason"] for entry in document["images_to_delete"]}
    recrops = [name for name, role in roles.items() if role == "re-crop"]
    kept = next(name for name in recrops if name != duplicates[0])
    assert removed == {duplicates[0]: f"duplicate of {kept}"}
    assert by_name["0000_actor_3.jpg"]["issues"] == []
    assert document["planned_counts"]["photorealistic"] == 12  # 13 photos, one a re-crop
    assert document["short"] == {"photorealistic": 1}  # the local generator makes no photos
    stays, goes = by_name[kept], by_name[duplicates[0]]
    assert (stays["quality_score"], stays["width"] * stays["height"]) > (
        goes["quality_score"],
        goes["width"] * goes["height"],
    )


# --- the pair verdict cache ------------------------------------------------------------------


def recrop_actor(folder: Path) -> list[TrainingImage]:
    """Two re-crops of one photo and another shot of the same people, typed by a manifest."""
    folder.mkdir(parents=True)
    photo = scene("basketball__basketball1")
    files = [
        cut(photo, (0.05, 0.0, 0.95, 0.95), 480),
        ImageOps.mirror(cut(photo, (0.0, 0.1, 0.72, 0.82), 400)),
        scene("basketball__basketball2"),
    ]
    images = []
    for number, image in enumerate(files, start=1):
        path = folder / f"a_{number}.jpg"
        image.save(path, quality=88)
        images.append(TrainingImage(number, path.name, path, {"type": "photorealistic"}))
    return images


def duplicate_flags(images: list[TrainingImage], cache: EvaluationCache) -> dict[int, str | None]:
    evaluation = evaluate_actor(images, Config(), LocalBackend(QualityConfig()), cache)
    return {image.number: image.duplicate_of for image in evaluation.images}


def test_a_rerun_takes_the_re_crop_verdicts_from_the_cache(tmp_path, monkeypatch):
    images = recrop_actor(tmp_path / "actor")
    cache = EvaluationCache(tmp_path / "cache")
    first = duplicate_flags(images, cache)
    assert first == {1: None, 2: "a_1.jpg", 3: None}

    def no_keypoints(working):
        raise AssertionError("keypoints computed again")

    monkeypatch.setattr(recrops, "local_features", no_keypoints)
    assert duplicate_flags(images, cache) == first


def test_an_unusable_verdict_cache_only_costs_time(tmp_path, caplog):
    images = recrop_actor(tmp_path / "actor")
    cache = EvaluationCache(tmp_path / "cache")
    (tmp_path / "cache" / recrops.PAIR_CACHE_NAME).mkdir()  # not a database
    with caplog.at_level(logging.WARNING):
        assert duplicate_flags(images, cache) == {1: None, 2: "a_1.jpg", 3: None}
    assert "re-crop verdict cache" in caplog.text


def test_a_too_small_copy_is_not_kept_in_place_of_a_usable_one():
    tiny_close_up = evaluation(1, score=3, size=(200, 200), face=face(0.6), issues=["too_small"])
    usable_wide = evaluation(2, score=7, face=face(0.2))
    assert kept_of([tiny_close_up, usable_wide]) == [2]
