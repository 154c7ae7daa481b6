"""The --demo dataset as a user gets it: made once, the same every time, all planted."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from PIL import Image, ImageFilter, ImageStat

from training_data.config import DEFAULT_MIX
from training_data.demo import ensure_demo_dataset
from training_data.errors import FatalRunError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under root: content hash and modification time."""
    return {
        str(path.relative_to(root)): (
            hashlib.sha256(path.read_bytes()).hexdigest(),
            path.stat().st_mtime_ns,
        )
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _hashes(root: Path) -> dict[str, str]:
    return {name: digest for name, (digest, _) in _snapshot(root).items()}


LIVE_BUILD_NAME = f".demo_data.building-{os.getpid()}-live"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One creation shared by the tests that only read the dataset.

    It is made the way a user may meet it: into an empty folder that already exists, next to the
    build folder of another creator that is still running (this test process).
    """
    data_dir = tmp_path_factory.mktemp("demo") / "demo_data"
    data_dir.mkdir()
    live_build = data_dir.parent / LIVE_BUILD_NAME
    live_build.mkdir()
    (live_build / "marker").write_text("x")
    assert ensure_demo_dataset(data_dir) is True
    return data_dir


def _actors(demo: Path) -> list[str]:
    return [entry["name"] for entry in json.loads((demo / "actorsData.json").read_text())]


def _manifest(demo: Path, actor: str) -> dict:
    path = demo / "actors" / actor / "training_data" / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {"images": {}}


def _image_files(demo: Path, actor: str) -> list[Path]:
    folder = demo / "actors" / actor / "training_data"
    return sorted(p for p in folder.iterdir() if p.suffix in IMAGE_SUFFIXES)


def _planted(demo: Path, prefix: str) -> list[tuple[str, Path, dict]]:
    """(actor, image path, manifest entry) of every image planted with a defect named prefix…"""
    found = []
    for actor in _actors(demo):
        folder = demo / "actors" / actor / "training_data"
        for filename, entry in _manifest(demo, actor)["images"].items():
            if entry.get("demo_planted", "").startswith(prefix):
                found.append((actor, folder / filename, entry))
    return found


def _edge_strength(image: Image.Image) -> float:
    return ImageStat.Stat(image.convert("L").filter(ImageFilter.FIND_EDGES)).mean[0]


def test_second_call_leaves_the_dataset_alone(demo):
    before = _snapshot(demo)
    assert ensure_demo_dataset(demo) is False
    assert _snapshot(demo) == before
    assert sorted(p.name for p in demo.parent.iterdir()) == [LIVE_BUILD_NAME, demo.name]


def test_an_empty_folder_is_filled_and_a_live_creators_build_is_kept(demo):
    assert (demo / "actorsData.json").exists()
    assert (demo.parent / LIVE_BUILD_NAME / "marker").read_text() == "x"


def test_layout_follows_spec_2(demo):
    actors = _actors(demo)
    assert 24 <= len(actors) <= 40
    assert actors == sorted(actors)
    assert all(name.endswith("_demo_actor") and name[:4].isdigit() for name in actors)
    for actor in actors:
        assert (demo / "actors" / actor / "training_data").is_dir()
    with_base = [a for a in actors if (demo / "actors" / a / "base_image").is_dir()]
    assert 3 <= len(with_base) < len(actors)
    for actor in with_base:
        bases = list((demo / "actors" / actor / "base_image").iterdir())
        assert len(bases) == 1
        with Image.open(bases[0]) as base:
            assert min(base.size) >= 256


def test_every_image_has_a_manifest_type_and_some_have_prompts_and_captions(demo):
    prompts = captions = 0
    for actor in _actors(demo):
        manifest = _manifest(demo, actor)
        files = {p.name for p in _image_files(demo, actor)}
        if not files:
            continue
        assert manifest["actor_id"] == actor
        assert files <= set(manifest["images"])
        for filename, entry in manifest["images"].items():
            assert entry["type"] in DEFAULT_MIX, (actor, filename)
            prompts += "prompt" in entry
        for caption in (demo / "actors" / actor / "training_data").glob("*.txt"):
            assert caption.stem in {Path(f).stem for f in files}
            assert caption.read_text().strip()
            captions += 1
    assert prompts > 50 and captions > 50


def test_images_are_drawn_at_about_512_px_in_all_three_styles(demo):
    modes: dict[str, set[str]] = {category: set() for category in DEFAULT_MIX}
    for actor in _actors(demo)[:3]:
        manifest = _manifest(demo, actor)
        for path in _image_files(demo, actor):
            with Image.open(path) as image:
                assert min(image.size) >= 448 and max(image.size) <= 576, path
                modes[manifest["images"][path.name]["type"]].add(image.mode)
    assert modes["bw_stylized"] == {"L"}
    assert "RGB" in modes["color_stylized"] and "RGB" in modes["photorealistic"]


def test_the_mix_has_balanced_over_under_and_empty_actors(demo):
    summary = {}
    for actor in _actors(demo):
        types = [entry["type"] for entry in _manifest(demo, actor)["images"].values()]
        summary[actor] = (
            len(types),
            tuple(types.count(category) for category in DEFAULT_MIX),
        )
    exactly_balanced = [a for a, (n, mix) in summary.items() if mix == (13, 4, 3)]
    assert len(exactly_balanced) >= 4
    assert any(n == 24 for n, _ in summary.values())
    assert any(n == 15 for n, _ in summary.values())
    assert any(n == 20 and mix[0] >= 18 for n, mix in summary.values())  # right total, wrong mix
    empty = [a for a, (n, _) in summary.items() if n == 0]
    assert len(empty) == 1
    assert list((demo / "actors" / empty[0] / "training_data").iterdir()) == []


def test_planted_unreadable_file_cannot_be_decoded(demo):
    [(_, path, _)] = _planted(demo, "unreadable")
    assert path.stat().st_size > 1000  # a cut-short download, not an empty file
    with pytest.raises(OSError), Image.open(path) as image:
        image.load()


def test_planted_exact_and_near_duplicates(demo):
    [(actor, exact, entry)] = _planted(demo, "exact_duplicate")
    original = exact.parent / entry["demo_planted"].split(" of ")[1]
    assert exact.read_bytes() == original.read_bytes()
    assert original.name == f"{actor}_1.jpg"  # first in any filename order: the copies come later
    assert exact != original
    [(near_actor, near, near_entry)] = _planted(demo, "near_duplicate")
    assert near_actor == actor and near_entry["demo_planted"].endswith(original.name)
    assert near.read_bytes() != original.read_bytes()
    with Image.open(near) as copy, Image.open(original) as source:
        assert copy.size != source.size
        a = copy.convert("L").resize((32, 32), Image.BILINEAR)
        b = source.convert("L").resize((32, 32), Image.BILINEAR)
    differences = [abs(x - y) for x, y in zip(a.tobytes(), b.tobytes(), strict=True)]
    assert sum(differences) / len(differences) < 3


def test_planted_blurry_tiny_and_dark_images(demo):
    [(actor, blurry, _)] = _planted(demo, "blurry")
    manifest = _manifest(demo, actor)["images"]
    sharp_photos = [
        blurry.parent / name
        for name, entry in manifest.items()
        if entry["type"] == "photorealistic" and "demo_planted" not in entry
    ]
    with Image.open(blurry) as image:
        blurry_edges = _edge_strength(image)
    for photo in sharp_photos:
        with Image.open(photo) as image:
            assert _edge_strength(image) > 4 * blurry_edges, photo
    [(_, tiny, _)] = _planted(demo, "tiny")
    with Image.open(tiny) as image:
        assert image.size == (64, 64)
    [(_, dark, _)] = _planted(demo, "dark")
    with Image.open(dark) as image:
        assert ImageStat.Stat(image.convert("L")).mean[0] < 30


def test_one_manifest_url_cannot_be_downloaded_and_stays_on_loopback(demo):
    [(actor, missing, entry)] = _planted(demo, "undownloadable")
    assert not missing.exists()
    url = urlsplit(entry["url"])
    assert (url.scheme, url.hostname, url.port) == ("http", "127.0.0.1", 9)
    assert url.path.endswith("/" + missing.name)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", 9), 2):
        pass
    assert _manifest(demo, actor)["images"][missing.name]["type"] == "photorealistic"


def test_no_url_anywhere_leaves_the_machine(demo):
    urls = []
    for actor in _actors(demo):
        for entry in _manifest(demo, actor)["images"].values():
            urls += [entry[key] for key in ("url", "s3_url") if key in entry]
    assert urls
    assert {urlsplit(url).hostname for url in urls} == {"127.0.0.1"}
    for path in demo.rglob("*.json"):
        text = path.read_text()
        assert text.count("http") == text.count("http://127.0.0.1:9/"), path


def test_defects_are_only_where_planted(demo):
    """Ordinary images are all readable, at full size, neither dark nor washed out."""
    for actor in _actors(demo)[:12]:
        manifest = _manifest(demo, actor)["images"]
        for path in _image_files(demo, actor):
            if "demo_planted" in manifest[path.name]:
                continue
            with Image.open(path) as image:
                image.load()
                brightness = ImageStat.Stat(image.convert("L")).mean[0]
                assert min(image.size) >= 448
            assert 60 < brightness < 215, (path, brightness)


def _real_face_actors(demo: Path) -> list[str]:
    """Actors with images whose manifest leaves the subject checks on."""
    return [
        actor
        for actor in _actors(demo)
        if _manifest(demo, actor)["images"] and "subject_checks" not in _manifest(demo, actor)
    ]


def test_one_actor_has_real_faces_with_three_planted_faults_and_the_drawn_ones_opt_out(demo):
    real = _real_face_actors(demo)
    assert len(real) == 1
    drawn = [a for a in _actors(demo) if _manifest(demo, a).get("subject_checks") is False]
    assert len(drawn) == len(_actors(demo)) - 2  # and the actor without images
    entries = _manifest(demo, real[0])["images"]
    planted = {entry.get("demo_planted") for entry in entries.values()} - {None}
    assert planted == {"other_person", "no_face", "face_cut_off"}
    types = [entry["type"] for entry in entries.values()]
    assert [types.count(category) for category in DEFAULT_MIX] == [5, 2, 1]
    for path in _image_files(demo, real[0]):
        with Image.open(path) as image:
            assert min(image.size) >= 256, path
    assert len(list((demo / "actors" / real[0] / "base_image").iterdir())) == 1


def test_exactly_the_real_actors_planted_faults_are_unusable(demo, tmp_path):
    from training_data.config import Config
    from training_data.dataset import Actor, base_images, list_training_images, read_manifest
    from training_data.evaluation import EvaluationCache, evaluate_actor
    from training_data.pipeline import make_backend

    [name] = _real_face_actors(demo)
    actor = Actor(name, demo / "actors" / name)
    images = list_training_images(actor, read_manifest(actor))
    config = Config()
    cache = EvaluationCache(tmp_path / "cache")
    evaluation = evaluate_actor(images, config, make_backend(config), cache, base_images(actor))
    planted = {
        filename: entry["demo_planted"]
        for filename, entry in _manifest(demo, name)["images"].items()
        if "demo_planted" in entry
    }
    unusable = {image.filename: image.issues for image in evaluation.images if image.unusable}
    assert unusable == {filename: [issue] for filename, issue in planted.items()}
    assert evaluation.evaluator["checks"]["subject"]["identity"] == "base_image"


def start_creator(data_dir: Path, **popen: Any) -> subprocess.Popen:
    """A separate process creating the demo dataset, to be killed or interrupted mid-way."""
    command = (
        "import sys; from pathlib import Path; "
        "from training_data.demo import ensure_demo_dataset; "
        "ensure_demo_dataset(Path(sys.argv[1]))"
    )
    return subprocess.Popen([sys.executable, "-c", command, str(data_dir)], **popen)


def test_interrupted_creation_is_redone_and_gives_the_same_files(demo, tmp_path):
    """Killed mid-creation (SIGKILL: no cleanup at all), the next call builds it again, whole."""
    data_dir = tmp_path / "demo_data"
    creator = start_creator(data_dir)
    try:
        build_dir = _wait_for_build_folder(tmp_path, creator)
    finally:
        creator.kill()
        creator.wait()
    assert build_dir.exists()  # the killed creator left its half-built folder behind
    assert not data_dir.exists()  # ...and never a half dataset where the tool looks
    assert ensure_demo_dataset(data_dir) is True
    assert not build_dir.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["demo_data"]
    assert _hashes(data_dir) == _hashes(demo)  # deterministic: two creations, same bytes


def test_ctrl_c_during_creation_leaves_nothing_behind(tmp_path):
    data_dir = tmp_path / "demo_data"
    creator = start_creator(data_dir, stderr=subprocess.PIPE)
    try:
        _wait_for_build_folder(tmp_path, creator)
        creator.send_signal(signal.SIGINT)
        _, stderr = creator.communicate(timeout=30)
    finally:
        creator.kill()
    assert creator.returncode != 0 and b"KeyboardInterrupt" in stderr
    assert list(tmp_path.iterdir()) == []


def _wait_for_build_folder(parent: Path, creator: subprocess.Popen) -> Path:
    """The hidden build folder, once it holds a few actors (polling; no timing is asserted)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert creator.poll() is None, "the creator finished before it could be interrupted"
        builds = [p for p in parent.iterdir() if p.name.startswith(".demo_data.building-")]
        if builds and len(list((builds[0] / "actors").glob("*"))) >= 2:
            return builds[0]
        time.sleep(0.01)
    raise AssertionError("no build folder appeared")


def test_an_existing_folder_is_never_written_into(tmp_path):
    data_dir = tmp_path / "demo_data"
    data_dir.mkdir()
    (data_dir / "my_notes.txt").write_text("mine")
    assert ensure_demo_dataset(data_dir) is False
    assert [p.name for p in data_dir.iterdir()] == ["my_notes.txt"]
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    assert ensure_demo_dataset(a_file) is False
    assert a_file.read_text() == "mine"


def test_a_folder_that_cannot_be_created_is_one_clear_error(tmp_path):
    blocker = tmp_path / "debug"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(
        FatalRunError, match=r"^cannot create the demo dataset in .*debug/demo_data"
    ):
        ensure_demo_dataset(blocker / "demo_data")
    assert blocker.read_text() == "a file where the folder should be"
