"""The subject (face) checks: real photos of people from packages (faces_data/SOURCES.md).

The model-heavy tests are few and work on the evaluator's 256 px working images.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import REPO, run_cli
from PIL import Image, ImageFilter
from test_plan import image

from training_data import faces
from training_data.checks import ActorImages, ImageView
from training_data.config import Config, SubjectConfig
from training_data.dataset import Actor, list_training_images, read_manifest
from training_data.errors import ActorError
from training_data.evaluation import (
    ALL_SCORE_CAPS,
    EvaluationCache,
    ImageEvaluation,
    LocalBackend,
    category_unusable,
    decode_working_image,
    evaluate_actor,
)
from training_data.pipeline import checks_turned_off, make_backend
from training_data.plan import make_plan
from training_data.subject import cut_off, face_issues, face_measurements, review

FACES = REPO / "scripts" / "training_data" / "faces_data"
PHOTO = "photorealistic"
BW = "bw_stylized"
COLOR = "color_stylized"
PORTRAITS = ("obama_podium", "obama_flags", "obama_office", "biden", "hopper", "collins")
OBAMA = ("obama_podium", "obama_flags", "obama_office")
SUBJECT = SubjectConfig()


def working(name: str) -> Image.Image:
    return decode_working_image((FACES / f"{name}.jpg").read_bytes())[0]


@pytest.fixture(scope="module")
def embeddings() -> dict[str, tuple[float, ...]]:
    found = {}
    for name in PORTRAITS:
        view = ImageView(working(name), 1, 1, PHOTO)
        assert view.embedding is not None, name
        found[name] = view.embedding
    return found


# --- detection and identity on real photos ---------------------------------------------------


def test_each_packaged_portrait_shows_one_face_and_the_rocket_none():
    for name in PORTRAITS:
        assert len(faces.find_faces(working(name))) == 1, name
    assert faces.find_faces(working("rocket")) == []


def test_the_shipped_detector_is_dlibs_frontal_face_detector():
    import dlib
    import numpy

    built = dlib.get_frontal_face_detector()
    for name in ("obama_flags", "collins", "rocket"):
        pixels = numpy.asarray(working(name))
        shipped_found = faces._detector().run(pixels, 1, 0.0)
        built_found = built.run(pixels, 1, 0.0)
        assert [list(map(str, found)) for found in shipped_found[:2]] == [
            list(map(str, found)) for found in built_found[:2]
        ]


def test_photos_of_one_person_are_near_and_of_different_people_far(embeddings):
    threshold = SUBJECT.identity_threshold
    same = [faces.distance(embeddings[a], embeddings[b]) for a in OBAMA for b in OBAMA if a < b]
    assert max(same) < threshold
    others = [name for name in PORTRAITS if name not in OBAMA]
    different = [faces.distance(embeddings[a], embeddings[b]) for a in OBAMA for b in others]
    different += [
        faces.distance(embeddings[a], embeddings[b]) for a in others for b in others if a < b
    ]
    assert min(different) > threshold


def test_a_face_cut_by_the_border_is_measured_as_cut_off():
    view = ImageView(working("obama_half_face"), 276, 640, PHOTO)
    assert len(view.faces) == 1
    measured = face_measurements(view, SUBJECT)
    assert measured["cut_off"] is True
    assert measured["box"][0] == 0.0  # relative, clipped to the picture
    other_half = face_measurements(ImageView(working("obama_half_face2"), 310, 640, PHOTO), SUBJECT)
    assert other_half["cut_off"] is True and other_half["box"][2] == 1.0
    whole = face_measurements(ImageView(working("obama_flags"), 334, 640, PHOTO), SUBJECT)
    assert whole["cut_off"] is False
    assert 0 < whole["box"][0] < whole["box"][2] < 1 and 0 < whole["box"][1] < whole["box"][3] < 1


# --- the rules, one threshold at a time ---------------------------------------------------------


def face(**changes) -> dict:
    measured = {
        "count": 1,
        "box": [0.3, 0.2, 0.7, 0.5],
        "height_ratio": 0.3,
        "sharpness": 80.0,
        "brightness": 130.0,
        "cut_off": False,
        "identity_distance": 0.3,
    }
    return measured | changes


@pytest.mark.parametrize(
    ("changes", "issues"),
    [
        ({}, []),
        ({"count": 0, "box": None}, ["no_face"]),
        ({"count": 2}, ["multiple_faces"]),
        ({"height_ratio": SUBJECT.min_face_height - 0.001}, ["face_too_small"]),
        ({"height_ratio": SUBJECT.min_face_height}, []),
        ({"cut_off": True}, ["face_cut_off"]),
        ({"sharpness": SUBJECT.face_blur_threshold - 0.1}, ["face_blurry"]),
        ({"sharpness": SUBJECT.face_blur_threshold}, []),
        ({"identity_distance": SUBJECT.identity_threshold + 0.001}, ["other_person"]),
        ({"identity_distance": SUBJECT.identity_threshold}, []),
        ({"identity_distance": None}, []),
    ],
)
def test_each_issue_at_its_threshold(changes, issues):
    assert face_issues(face(**changes), SUBJECT) == issues


def test_thresholds_come_from_the_config():
    strict = replace(SUBJECT, min_face_height=0.5, identity_threshold=0.2)
    assert face_issues(face(), strict) == ["face_too_small", "other_person"]


def test_a_drawing_is_another_person_only_further_away():
    between = face(identity_distance=0.7)
    assert face_issues(between, SUBJECT, photo=True) == ["other_person"]
    assert face_issues(between, SUBJECT, photo=False) == []
    far = face(identity_distance=SUBJECT.stylized_identity_threshold + 0.01)
    assert face_issues(far, SUBJECT, photo=False) == ["other_person"]


def test_no_face_cut_off_and_other_person_make_a_photo_unusable_but_only_lower_a_drawing():
    assert {"no_face", "face_cut_off", "other_person"} <= category_unusable(PHOTO)
    for category in (BW, COLOR):
        assert not {"no_face", "face_cut_off", "other_person"} & category_unusable(category)
    for issue in ("multiple_faces", "face_too_small", "face_blurry"):
        assert issue not in category_unusable(PHOTO)
    images = [
        image(1, PHOTO, 3, "no_face"),
        image(2, PHOTO, 4, "face_cut_off"),
        image(3, PHOTO, 2, "other_person"),
        image(4, PHOTO, 4, "face_blurry"),
        image(5, BW, 3, "no_face"),
        image(6, COLOR, 2, "other_person"),
    ]
    plan = make_plan(images, Config().target)
    assert [(r.number, r.reason) for r in plan.removals] == [
        (1, "no_face"),
        (2, "face_cut_off"),
        (3, "other_person"),
    ]


def reviewed(number: int, category: str, score: int = 6, **measured) -> ImageEvaluation:
    evaluated = image(number, category, score)
    evaluated.measurements = {"face": face(**measured)}
    return evaluated


def test_the_score_uses_the_face():
    big_sharp = reviewed(1, PHOTO, height_ratio=0.3, sharpness=90.0)
    small_soft = reviewed(2, PHOTO, height_ratio=0.12, sharpness=30.0)
    no_face = reviewed(3, PHOTO, count=0, box=None, height_ratio=0.0, sharpness=0.0)
    review([big_sharp, small_soft, no_face], SUBJECT, ActorImages({}, (), ALL_SCORE_CAPS))
    assert big_sharp.quality_score > small_soft.quality_score > no_face.quality_score
    assert no_face.issues == ["no_face"] and no_face.quality_score <= ALL_SCORE_CAPS["no_face"]


def test_an_actor_without_faces_is_not_a_person_and_gets_no_subject_issue():
    images = [
        reviewed(n, PHOTO, count=0, box=None, height_ratio=0.0, sharpness=0.0) for n in (1, 2, 3)
    ]
    images.append(reviewed(4, PHOTO, height_ratio=0.05))  # one false face in four photos
    summary = review(images, SUBJECT, ActorImages({}, (), ALL_SCORE_CAPS))
    assert summary is not None and summary["person"] is False
    assert all(image.issues == [] and image.quality_score == 6 for image in images)


# --- the whole set: identity from base_image/ or from the set's median ------------------------


def actor_with(tmp_path: Path, names: list[str]) -> Actor:
    """An actor whose photos are the packaged ones named, typed photorealistic."""
    actor = Actor("actor", tmp_path / "actors" / "actor")
    actor.training_dir.mkdir(parents=True)
    entries = {}
    for number, name in enumerate(names, start=1):
        filename = f"actor_{number}.jpg"
        shutil.copy(FACES / f"{name}.jpg", actor.training_dir / filename)
        entries[filename] = {"type": PHOTO}
    manifest = {"actor_id": actor.name, "images": entries}
    actor.manifest_path.write_text(json.dumps(manifest))
    return actor


def add_to_manifest(actor: Actor, types: dict[str, str]) -> None:
    manifest = json.loads(actor.manifest_path.read_text())
    manifest["images"] |= {filename: {"type": kind} for filename, kind in types.items()}
    actor.manifest_path.write_text(json.dumps(manifest))


def evaluate(actor: Actor, tmp_path: Path, config: Config | None = None, references=()):
    config = config or Config()
    images = list_training_images(actor, json.loads(actor.manifest_path.read_text()))
    cache = EvaluationCache(tmp_path / "cache")
    result = evaluate_actor(images, config, make_backend(config), cache, references)
    return {image.filename: image for image in result.images}, result.evaluator


def test_identity_from_the_sets_median_finds_the_other_person(tmp_path):
    actor = actor_with(tmp_path, [*OBAMA, "biden"])
    images, evaluator = evaluate(actor, tmp_path)
    assert evaluator["checks"]["subject"]["identity"] == "median"
    assert images["actor_4.jpg"].issues == ["other_person"]
    assert images["actor_4.jpg"].measurements["face"]["identity_distance"] > 0.6
    for number in (1, 2, 3):
        face_measured = images[f"actor_{number}.jpg"].measurements["face"]
        assert images[f"actor_{number}.jpg"].issues == []
        assert face_measured["identity_distance"] < 0.6
        assert face_measured["count"] == 1 and "embedding" not in face_measured


def test_identity_from_the_base_image_wins_over_the_median(tmp_path):
    actor = actor_with(tmp_path, [*OBAMA, "biden"])
    actor.base_image_dir.mkdir()
    shutil.copy(FACES / "biden.jpg", actor.base_image_dir / "base.jpg")
    images, evaluator = evaluate(actor, tmp_path, references=[actor.base_image_dir / "base.jpg"])
    assert evaluator["checks"]["subject"]["identity"] == "base_image"
    assert [images[f"actor_{n}.jpg"].issues for n in (1, 2, 3, 4)] == [
        ["other_person"],
        ["other_person"],
        ["other_person"],
        [],
    ]


def test_a_full_body_shot_is_face_too_small_not_no_face(tmp_path):
    actor = actor_with(tmp_path, [*OBAMA])
    portrait = Image.open(FACES / "obama_flags.jpg")
    small = portrait.resize((119, 229), Image.Resampling.LANCZOS)  # the face: 9% of the canvas
    canvas = Image.new("RGB", (480, 720), (128, 140, 120))
    canvas.paste(small, (170, 150))
    canvas.save(actor.training_dir / "actor_4.jpg", quality=90)
    add_to_manifest(actor, {"actor_4.jpg": PHOTO})
    images, _ = evaluate(actor, tmp_path)
    far = images["actor_4.jpg"]  # (also a re-crop of actor_2: a duplicate)
    assert "face_too_small" in far.issues and "no_face" not in far.issues
    assert far.measurements["face"]["closer_look"] is True


def test_subject_checks_can_be_turned_off(tmp_path):
    actor = actor_with(tmp_path, [*OBAMA, "rocket"])
    config = Config(subject=replace(SUBJECT, enabled=False))
    images, evaluator = evaluate(actor, tmp_path, config)
    assert all("face" not in image.measurements for image in images.values())
    assert images["actor_4.jpg"].issues == [] and "checks" not in evaluator
    assert LocalBackend(config.quality).settings()["subject"]["enabled"] is False


def test_a_manifest_turns_the_subject_checks_off_for_its_actor(tmp_path):
    actor = actor_with(tmp_path, [*OBAMA, "rocket"])
    manifest = json.loads(actor.manifest_path.read_text())
    assert checks_turned_off(manifest) == frozenset()
    manifest["subject_checks"] = False
    actor.manifest_path.write_text(json.dumps(manifest))
    images = list_training_images(actor, read_manifest(actor))
    config = Config()
    cache = EvaluationCache(tmp_path / "cache")
    off = checks_turned_off(read_manifest(actor))
    result = evaluate_actor(images, config, make_backend(config), cache, (), off)
    assert [image.issues for image in result.images] == [[], [], [], []]
    assert all("face" not in image.measurements for image in result.images)
    assert "checks" not in result.evaluator
    turned_on = evaluate_actor(images, config, make_backend(config), cache)
    assert turned_on.evaluator["judged"] == 4  # not the verdicts judged without the checks
    assert turned_on.images[3].issues == ["no_face"]
    manifest["subject_checks"] = "no"
    actor.manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ActorError, match="subject_checks"):
        read_manifest(actor)


def test_subject_settings_are_part_of_the_cache_key(tmp_path):
    actor = actor_with(tmp_path, [*OBAMA])
    _, first = evaluate(actor, tmp_path)
    _, again = evaluate(actor, tmp_path)
    assert (first["judged"], again["cache_hits"]) == (3, 3)
    looser = Config(subject=replace(SUBJECT, counted_face_ratio=0.3))
    _, changed = evaluate(actor, tmp_path, looser)
    assert changed["judged"] == 3


# --- end to end: the plan removes exactly the faulty photos; generated images keep the face ----


def test_the_run_removes_the_other_person_the_faceless_and_the_cut_photo_and_keeps_faces(
    tmp_path,
):
    # Distinct photos only (a mirror or crop is a duplicate); the half face is cut from the
    # podium photo, which is therefore the base image, not in the set.
    names = ["obama_flags", "obama_office", "biden", "rocket", "obama_half_face"]
    actor = actor_with(tmp_path, names)
    actor.base_image_dir.mkdir()
    shutil.copy(FACES / "obama_podium.jpg", actor.base_image_dir / "base.jpg")
    out = tmp_path / "out"
    config = tmp_path / "config.toml"  # 2 photos: a target of 2/1/1
    config.write_text(
        "[target]\ntotal = 4\n[target.mix]\nphotorealistic = 0.5\nbw_stylized = 0.25\n"
        "color_stylized = 0.25\n"
    )
    result = run_cli(
        "--all",
        "--execute",
        "--config",
        config,
        "--data-dir",
        tmp_path,
        "--output-dir",
        out,
        cwd=tmp_path,
    )
    assert result.returncode in (0, 1), result.stderr
    removed = sorted(path.name for path in actor.removed_dir.rglob("*.jpg"))
    assert removed == ["actor_3.jpg", "actor_4.jpg", "actor_5.jpg"]
    document = json.loads(next(out.glob("*actor_evaluation.json")).read_text())
    reasons = {entry["filename"]: entry["reason"] for entry in document["images_to_delete"]}
    assert reasons == {
        "actor_3.jpg": "other_person",
        "actor_4.jpg": "no_face",
        "actor_5.jpg": "face_cut_off",
    }
    manifest = json.loads(actor.manifest_path.read_text())
    generated = [name for name, entry in manifest["images"].items() if "generator" in entry]
    planned = sum(entry["count"] for entry in document["images_to_generate"])
    assert planned == 2 and len(generated) == planned
    assert {manifest["images"][name]["type"] for name in generated} == {BW, COLOR}
    for name in generated:
        found, size = face_in_drawing(actor.training_dir / name)
        assert found is not None, name
        assert not cut_off(found, size), name


def face_in_drawing(path: Path) -> tuple[faces.Face | None, tuple[int, int]]:
    """The main face of a generated image: hatching and halftone confuse the HOG detector, so
    a lightly smoothed copy is searched too (30 of 30 test renderings found, 29 without)."""
    picture = decode_working_image(path.read_bytes())[0]
    for candidate in (picture, picture.filter(ImageFilter.GaussianBlur(1))):
        found = faces.find_faces(candidate, 1) or faces.find_faces(candidate, 2)
        if found:
            return found[0], picture.size
    return None, picture.size
