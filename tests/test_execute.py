"""Execute: reversible removal, generation, restore, and convergence after crashes."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import within
from execute_helpers import (
    BW,
    COLOR,
    PHOTO,
    evaluations,
    file_hashes,
    make_actor,
    photo_ranking,
    plan_for,
    run_child,
    synthetic_photo,
)
from PIL import Image

from training_data.config import DEFAULT_PROMPTS, TargetConfig
from training_data.dataset import Actor, list_training_images, read_manifest
from training_data.errors import ActorError
from training_data.execute import (
    actor_descriptor,
    apply_plan,
    execution_of_runs,
    recover,
    restore_removed,
)
from training_data.generation import LocalGenerator
from training_data.plan import Plan, Removal

RUN = "20250101T000000Z"


def apply(
    actor: Actor,
    generator=None,
    run: str = RUN,
    plan: Plan | None = None,
    target: TargetConfig | None = None,
):
    """What the pipeline does: recover, then plan on what is there and apply."""
    recovered = recover(actor)
    images = list_training_images(actor, read_manifest(actor))
    result = apply_plan(
        actor,
        images,
        plan or plan_for(actor, target),
        generator,
        DEFAULT_PROMPTS,
        run,
        source_ranking=photo_ranking(actor),
    )
    result.messages[:0] = recovered
    return result


def categories(actor: Actor) -> dict[str, int]:
    counts = dict.fromkeys((PHOTO, BW, COLOR), 0)
    for evaluation in evaluations(actor):
        counts[evaluation.type] += 1
    return counts


def assert_nothing_lost(actor: Actor, before: dict[str, str], settled: bool = True) -> None:
    """Every file that was in training_data is, byte for byte, in training_data or in a removal
    folder, under its own name; once settled, with its captions beside it."""
    now = file_hashes(actor.folder)
    for relative, digest in before.items():
        name = relative.split("/")[-1]
        homes = [
            place
            for place, found in now.items()
            if place.split("/")[-1] == name and found == digest
        ]
        assert len(homes) == 1, (relative, homes)
        if not settled:
            continue  # a killed run may leave an image moved and its caption not yet
        folder = homes[0].rsplit("/", 1)[0]
        stem = name.rsplit(".", 1)[0]
        for caption, caption_digest in before.items():
            if caption.rsplit(".", 1)[0].split("/")[-1] == stem and caption != relative:
                assert now.get(f"{folder}/{caption.split('/')[-1]}") == caption_digest


def assert_settled(actor: Actor) -> None:
    """At rest: every manifest entry names an existing file; nothing is in two places."""
    manifest = read_manifest(actor) or {}
    for name in manifest.get("images", {}):
        assert (actor.training_dir / name).is_file(), name
    for key, record in manifest.get("removed_images", {}).items():
        assert (actor.folder / record["moved_to"]).is_file(), key
        assert record["moved_to"].startswith("removed_training_data/")
    for folder in actor.removed_dir.glob("*"):
        journal = json.loads((folder / "removal.json").read_text())
        assert journal["state"] == "removed"
        for removal in journal["removals"]:
            for name in removal["files"]:
                in_removed = (folder / name).exists()
                in_training = (actor.training_dir / name).exists()
                assert in_removed != in_training, name
    leftovers = [p for p in actor.folder.rglob(".tmp-*")]
    assert not leftovers


def training_files(actor: Actor) -> dict[str, str]:
    return file_hashes(actor.training_dir)


def originals(actor: Actor) -> dict[str, str]:
    """The user's files (not the manifest, which the tool rewrites), by path in the actor."""
    return {
        f"training_data/{name}": digest
        for name, digest in file_hashes(actor.training_dir).items()
        if name != "manifest.json"
    }


# --- removing and generating ---------------------------------------------------------------------


def test_execute_reaches_the_target_and_keeps_every_file(tmp_path: Path):
    actor = make_actor(tmp_path, {PHOTO: 18, BW: 1})
    before = originals(actor)
    result = apply(actor, LocalGenerator())

    assert categories(actor) == {PHOTO: 13, BW: 4, COLOR: 3}
    assert plan_for(actor).is_balanced
    assert len(result.removed) == 5 and result.unfulfilled == {} and result.messages == []
    assert result.removal_folder == f"removed_training_data/{RUN}"
    assert_nothing_lost(actor, before)
    assert_settled(actor)

    manifest = read_manifest(actor)
    assert manifest["notes"] == {"kept": True}  # unknown fields survive
    for removal in result.removed:
        record = manifest["removed_images"][removal["filename"]]
        assert record["type"] == PHOTO and record["source"] == "test"  # the entry moved whole
        assert record["reason"] == removal["reason"] and record["removed_at"]
        assert record["moved_to"] == removal["moved_to"]
        assert removal["filename"] not in manifest["images"]
    for made in result.generated:
        entry = manifest["images"][made["filename"]]
        assert set(entry) == {"type", "prompt", "generator", "generated_at", "run"}
        assert entry["type"] == made["type"] and entry["generator"] == "local"
        assert entry["run"] == RUN
        assert "a 25-year-old european female" in entry["prompt"]
        assert Image.open(actor.training_dir / made["filename"]).format == "JPEG"
    assert [m["filename"] for m in result.generated] == [
        f"{actor.name}_{n}.jpg" for n in range(20, 26)
    ]
    assert {m["prompt"] for m in result.generated if m["type"] == BW} == {
        template.format(descriptor="a 25-year-old european female")
        for template in DEFAULT_PROMPTS[BW]
    }


def test_what_a_run_did_reads_back_from_its_journal_and_manifest(tmp_path: Path):
    """The record of a run stopped before it wrote one: the same as the one it would have,
    and nothing of another run's."""
    actor = make_actor(tmp_path, {PHOTO: 18, BW: 1})
    result = apply(actor, LocalGenerator())
    later_run = "20250102T000000Z"
    later = apply(actor, LocalGenerator(), run=later_run, target=TargetConfig(total=26))
    assert result.removed and result.generated and later.generated

    for run, done in ((RUN, result), (later_run, later)):
        read_back = execution_of_runs(actor, [run])
        assert read_back.removed == done.removed and read_back.generated == done.generated
        assert read_back.removal_folder == done.removal_folder
    assert execution_of_runs(actor, ["20250103T000000Z"]).to_dict() == {
        "removed": [],
        "generated": [],
        "unfulfilled": {},
        "messages": [],
        "removal_folder": None,
    }


def test_local_generator_reports_photorealistic_as_unfulfilled(tmp_path: Path):
    actor = make_actor(tmp_path, {PHOTO: 5, BW: 4, COLOR: 3})
    result = apply(actor, LocalGenerator())
    assert result.unfulfilled == {PHOTO: 8}
    assert result.messages == [
        "photorealistic: 8 not generated (local generator cannot make photorealistic images)"
    ]
    assert result.removed == [] and result.removal_folder is None
    assert not actor.removed_dir.exists()


def test_no_generator_reports_every_missing_image(tmp_path: Path):
    actor = make_actor(tmp_path, {PHOTO: 13, BW: 1})
    result = apply(actor, None)
    assert result.unfulfilled == {BW: 3, COLOR: 3} and result.generated == []
    assert all("generator.backend is none" in line for line in result.messages)


def test_stylized_images_come_from_the_base_image_without_photos(tmp_path: Path):
    actor = make_actor(tmp_path, {BW: 1, COLOR: 1})
    actor.base_image_dir.mkdir()
    shutil.copy(actor.training_dir / f"{actor.name}_1.jpg", actor.base_image_dir / "base.jpg")
    target = TargetConfig(total=4, mix={BW: 0.5, COLOR: 0.5})
    result = apply(actor, LocalGenerator(), plan=plan_for(actor, target))
    assert [m["type"] for m in result.generated] == [BW, COLOR]


def test_new_names_are_never_reused(tmp_path: Path):
    """The highest-numbered image is removed; a new one still gets a higher number."""
    actor = make_actor(tmp_path, {PHOTO: 14, BW: 4, COLOR: 2})
    top = f"{actor.name}_20.jpg"
    (actor.training_dir / top).rename(actor.training_dir / f"{actor.name}_90.jpg")
    manifest = read_manifest(actor)
    manifest["images"][f"{actor.name}_90.jpg"] = manifest["images"].pop(top)
    actor.manifest_path.write_text(json.dumps(manifest))
    plan = Plan(
        counts={},
        percentages={},
        targets={},
        is_balanced=False,
        removals=(Removal(20, f"{actor.name}_90.jpg", COLOR, 1, "test"),),
        generations={COLOR: 1},
    )
    result = apply(actor, LocalGenerator(), plan=plan)
    assert result.generated[0]["filename"] == f"{actor.name}_91.jpg"


def test_an_entry_without_a_file_is_set_aside_without_moving_anything(tmp_path: Path):
    actor = make_actor(tmp_path, {PHOTO: 13, BW: 4, COLOR: 3})
    manifest = read_manifest(actor)
    manifest["images"]["lost.jpg"] = {"type": PHOTO, "note": "no file, no url"}
    actor.manifest_path.write_text(json.dumps(manifest))
    result = apply(actor)
    assert [r["filename"] for r in result.removed] == ["lost.jpg"]
    assert result.removed[0]["moved_to"] is None
    manifest = read_manifest(actor)
    assert "lost.jpg" not in manifest["images"]
    assert manifest["removed_images"]["lost.jpg"]["note"] == "no file, no url"
    restore_removed(actor)
    assert read_manifest(actor)["images"]["lost.jpg"] == {"type": PHOTO, "note": "no file, no url"}


def test_images_without_a_manifest_get_one_that_restore_takes_away(tmp_path: Path):
    actor = make_actor(tmp_path, {}, untyped=22, with_manifest=False)
    before = originals(actor)
    result = apply(actor)
    assert len(result.removed) == 9  # 22 photos -> 13
    removed = read_manifest(actor)["removed_images"]
    assert set(removed) == {r["filename"] for r in result.removed}
    assert all(
        set(record) == {"reason", "removed_at", "moved_to", "run"} for record in removed.values()
    )
    restore_removed(actor)
    assert originals(actor) == before and not actor.manifest_path.exists()


def test_hostile_manifest_path_is_refused_with_nothing_moved(tmp_path: Path):
    actor = make_actor(tmp_path, {PHOTO: 18, BW: 1})
    (actor.folder / "outside.jpg").write_bytes(b"not for the tool")
    plan = plan_for(actor)
    images = list_training_images(actor, read_manifest(actor))
    before = file_hashes(actor.folder)
    original = actor.manifest_path.read_text()
    for hostile in ("../outside.jpg", "/etc/passwd.jpg", "sub/../../outside.jpg"):
        manifest = json.loads(original)
        manifest["images"][hostile] = {"type": PHOTO}
        actor.manifest_path.write_text(json.dumps(manifest))
        with pytest.raises(ActorError, match="not a plain image file name"):
            apply_plan(actor, images, plan, LocalGenerator(), DEFAULT_PROMPTS, RUN, ())
        assert json.loads(actor.manifest_path.read_text()) == manifest
        actor.manifest_path.write_text(original)
        assert file_hashes(actor.folder) == before
        assert not actor.removed_dir.exists()


def test_hostile_journal_is_refused(tmp_path: Path):
    actor = make_actor(tmp_path, {PHOTO: 15, BW: 4, COLOR: 3})
    apply(actor)
    journal_path = actor.removed_dir / RUN / "removal.json"
    journal = json.loads(journal_path.read_text())
    journal["state"] = "restoring"
    journal["removals"][0]["files"].append("../../../outside.txt")
    journal_path.write_text(json.dumps(journal))
    before = file_hashes(actor.folder)
    with pytest.raises(ActorError, match=r"removal journal .* is not valid"):
        restore_removed(actor)
    assert file_hashes(actor.folder) == before


# --- restore -------------------------------------------------------------------------------------


def test_restore_brings_the_set_back_exactly(tmp_path: Path):
    actor = make_actor(tmp_path, {PHOTO: 18, BW: 4, COLOR: 3}, untyped=2)
    before, manifest_before = originals(actor), read_manifest(actor)
    result = apply(actor)
    assert len(result.removed) == 7 and originals(actor) != before

    restored = restore_removed(actor)
    assert sorted(restored.restored) == sorted(r["filename"] for r in result.removed)
    assert restored.kept == [] and restored.runs == [RUN]
    assert restored.messages[0].startswith("restored 7 image(s)")
    assert originals(actor) == before
    assert read_manifest(actor) == manifest_before
    assert [p.name for p in (actor.removed_dir / RUN).iterdir()] == ["removal.json"]

    again = restore_removed(actor)
    assert again.restored == [] and again.messages[-1].startswith("nothing left to restore")
    assert originals(actor) == before


def test_restore_keeps_generated_images_and_brings_back_the_removed(tmp_path: Path):
    actor = make_actor(tmp_path, {PHOTO: 18, BW: 1})
    before = originals(actor)
    result = apply(actor, LocalGenerator())
    restore_removed(actor)
    after = originals(actor)
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) - set(before) == {f"training_data/{m['filename']}" for m in result.generated}
    assert_settled(actor)


def test_restore_never_overwrites_a_file_that_came_back(tmp_path: Path):
    actor = make_actor(tmp_path, {PHOTO: 15, BW: 4, COLOR: 3})
    result = apply(actor)
    taken = result.removed[0]["filename"]
    (actor.training_dir / taken).write_bytes(b"a new file under the old name")
    restored = restore_removed(actor)
    assert restored.kept == [taken]
    assert any(taken in line and "not overwritten" in line for line in restored.messages)
    assert (actor.training_dir / taken).read_bytes() == b"a new file under the old name"
    assert (actor.removed_dir / RUN / taken).is_file()
    assert len(restored.restored) == len(result.removed) - 1
    assert taken in read_manifest(actor)["removed_images"]


def two_runs(tmp_path: Path) -> tuple[Actor, dict[str, str], list[dict], list[dict]]:
    """An actor that two execute runs took images from; its files as they were before both."""
    actor = make_actor(tmp_path, {PHOTO: 16, BW: 4, COLOR: 3})
    before = originals(actor)
    first = apply(actor, run="20250101T000000Z")
    manifest = read_manifest(actor)
    for name in list(manifest["images"])[:3]:
        manifest["images"][name]["type"] = BW  # now 3 surplus bw images
    actor.manifest_path.write_text(json.dumps(manifest))
    second = apply(actor, run="20250102T000000Z")
    assert second.removed and first.removed
    return actor, before, first.removed, second.removed


def test_restore_puts_back_every_run_newest_first(tmp_path: Path):
    actor, before, first, second = two_runs(tmp_path)
    restored = restore_removed(actor)
    assert restored.runs == ["20250102T000000Z", "20250101T000000Z"]
    assert sorted(restored.restored) == sorted(r["filename"] for r in first + second)
    assert originals(actor) == before
    assert "removed_images" not in read_manifest(actor)
    assert_settled(actor)
    again = restore_removed(actor)
    assert again.restored == [] and again.messages[-1].startswith("nothing left to restore")


def test_restore_of_one_run_names_the_folders_still_holding_images(tmp_path: Path):
    actor, _before, first, second = two_runs(tmp_path)
    restored = restore_removed(actor, run="20250102T000000Z")
    assert restored.runs == ["20250102T000000Z"]
    assert sorted(restored.restored) == sorted(r["filename"] for r in second)
    for removal in first:
        assert (actor.folder / removal["moved_to"]).is_file()
    held = f"removed_training_data/20250101T000000Z ({len(first)} images)"
    assert restored.messages[-1] == f"removal folders that still hold images: {held}"
    assert_settled(actor)


def test_restore_names_a_removal_folder_it_did_not_make(tmp_path: Path):
    actor = make_actor(tmp_path, {PHOTO: 13, BW: 4, COLOR: 3})
    by_hand = actor.removed_dir / "old"
    by_hand.mkdir(parents=True)
    (by_hand / "a.jpg").write_bytes(b"set aside by hand")
    result = restore_removed(actor)
    assert result.restored == []
    assert "nothing to restore" in result.messages[0]
    assert result.messages[-1].endswith("old (1 image, not set aside by this tool)")


def test_restore_with_nothing_removed_says_so(tmp_path: Path):
    actor = make_actor(tmp_path, {PHOTO: 13, BW: 4, COLOR: 3})
    result = restore_removed(actor)
    assert result.restored == [] and result.runs == []
    assert "no execute run has removed images" in result.messages[0]


# --- crash safety --------------------------------------------------------------------------------


class SimulatedCrash(BaseException):
    """Stands for the process dying at one exact filesystem step."""


def each_crash_point(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    template: Actor,
    action: Callable[[Actor], object],
) -> Iterator[tuple[Actor, bool]]:
    """A fresh copy of ``template`` per commit point, ``action`` stopped at that point, and
    whether it finished: the last one runs through, so every rename was a crash point."""
    step = 1
    while True:
        root = tmp_path / f"step{step}"
        shutil.copytree(template.folder, root / "actors" / template.name)
        actor = Actor(template.name, root / "actors" / template.name)
        with monkeypatch.context() as patch:
            seen = crash_at(patch, step)
            try:
                action(actor)
                finished = True
            except SimulatedCrash:
                finished = False
        yield actor, finished
        if finished:
            assert step == seen[0] + 1
            return
        step += 1


def crash_at(monkeypatch: pytest.MonkeyPatch, step: int) -> list[int]:
    """Make the ``step``-th rename (files, manifest and journal commits alike) never happen."""
    seen = [0]
    real_rename, real_replace = os.rename, os.replace

    def counted(real):
        def rename(source, destination):
            seen[0] += 1
            if seen[0] == step:
                raise SimulatedCrash
            return real(source, destination)

        return rename

    monkeypatch.setattr(os, "rename", counted(real_rename))
    monkeypatch.setattr(os, "replace", counted(real_replace))
    return seen


def test_a_crash_at_every_step_converges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Stop the run at each of its commit points in turn, run again, check it converged."""
    template = make_actor(tmp_path / "template", {PHOTO: 10, BW: 1, COLOR: 1})
    target = TargetConfig(total=10)  # 7/2/1: three photos go, one bw drawing is made
    before = originals(template)
    steps = 0
    for actor, finished in each_crash_point(
        tmp_path, monkeypatch, template, lambda actor: apply(actor, LocalGenerator(), target=target)
    ):
        steps += 1
        assert_nothing_lost(actor, before, settled=finished)
        recover(actor)
        apply(actor, LocalGenerator(), run="20250102T000000Z", target=target)
        assert categories(actor) == {PHOTO: 7, BW: 2, COLOR: 1}, steps
        assert_settled(actor)
        assert_nothing_lost(actor, before)
        assert all(entry.get("type") for entry in read_manifest(actor)["images"].values())
    assert steps >= 9


def test_a_crash_at_every_step_of_a_restore_converges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Restoring two runs, stopped at each commit point in turn: the next restore finishes it."""
    template, before, _first, _second = two_runs(tmp_path / "template")
    steps = 0
    for actor, _finished in each_crash_point(tmp_path, monkeypatch, template, restore_removed):
        steps += 1
        restore_removed(actor)
        assert originals(actor) == before, steps
        assert_settled(actor)
        assert "removed_images" not in read_manifest(actor)
    assert steps >= 7


def test_recovery_finishes_a_move_that_left_two_identical_copies(tmp_path: Path):
    """A cross-filesystem move copies, then unlinks: killed in between, recovery drops the
    source copy if it is byte-identical, and keeps both (saying so) if it is not."""
    actor = make_actor(tmp_path, {PHOTO: 16, BW: 4, COLOR: 3})
    result = apply(actor)
    same, different = (removal["filename"] for removal in result.removed[:2])
    folder = actor.removed_dir / RUN
    shutil.copy2(folder / same, actor.training_dir / same)
    (actor.training_dir / different).write_bytes(b"someone else's file")
    journal = json.loads((folder / "removal.json").read_text())
    journal["state"] = "removing"
    (folder / "removal.json").write_text(json.dumps(journal))

    messages = recover(actor)
    assert not (actor.training_dir / same).exists() and (folder / same).is_file()
    assert (actor.training_dir / different).read_bytes() == b"someone else's file"
    assert (folder / different).is_file()
    assert any("kept both" in line and different in line for line in messages)


def test_removal_across_filesystems(tmp_path: Path):
    """removed_training_data on another filesystem (a tmpfs mounted there): moves copy, sync,
    then unlink. A folder of the actor's own: a symlink out of the actor's folder is refused."""
    actor = make_actor(tmp_path, {PHOTO: 16, BW: 4, COLOR: 3})
    actor.removed_dir.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "tmpfs", str(actor.removed_dir)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("needs the right to mount a tmpfs")
    try:
        assert actor.removed_dir.stat().st_dev != actor.training_dir.stat().st_dev
        before = originals(actor)
        result = apply(actor)
        assert len(result.removed) == 3
        assert_nothing_lost(actor, before)
        assert_settled(actor)
        restore_removed(actor)
        assert originals(actor) == before
    finally:
        subprocess.run(["umount", str(actor.removed_dir)], check=True)


@pytest.mark.parametrize("linked", ["training_data", "removed_training_data"])
def test_a_folder_linked_outside_the_actor_fails_it_with_nothing_moved(tmp_path: Path, linked: str):
    actor = make_actor(tmp_path / "data", {PHOTO: 16, BW: 4, COLOR: 3})
    outside = tmp_path / "outside"
    if linked == "training_data":
        shutil.move(actor.training_dir, outside)
    else:
        outside.mkdir()
    (actor.folder / linked).symlink_to(outside)
    before = file_hashes(tmp_path)

    with pytest.raises(ActorError) as caught:
        apply(actor)
    with pytest.raises(ActorError):
        restore_removed(actor)

    assert str(caught.value) == (
        f"{linked} of {actor.name} is a symlink to {outside}, outside the actor's folder: "
        "no file is moved out of or into it; make it a real folder"
    )
    assert file_hashes(tmp_path) == before


def test_interrupted_generation_keeps_its_manifest_entry(tmp_path: Path):
    """An image saved just before a crash gets its manifest entry back from its JPEG comment."""
    actor = make_actor(tmp_path, {PHOTO: 13, BW: 3, COLOR: 3})
    made = apply(actor, LocalGenerator()).generated[0]
    manifest = read_manifest(actor)
    entry = manifest["images"].pop(made["filename"])
    actor.manifest_path.write_text(json.dumps(manifest))  # as if killed before the manifest
    assert recover(actor) == [f"recorded the manifest entry of generated image {made['filename']}"]
    assert read_manifest(actor)["images"][made["filename"]] == entry


def add_work(actor: Actor, attempt: int) -> dict[str, str]:
    """Between two runs the dataset changes: new photos to thin out, a drawing retyped as a photo.

    So every attempt has removals and a generation to be killed in. Returns the new files.
    """
    for index in range(6):
        name = f"extra_{attempt}_{index}"
        synthetic_photo(1000 * attempt + index).save(actor.training_dir / f"{name}.jpg")
        (actor.training_dir / f"{name}.txt").write_text(f"caption of {name}\n")
    manifest = read_manifest(actor)
    drawings = [name for name, entry in manifest["images"].items() if entry.get("type") == BW]
    if drawings:
        manifest["images"][drawings[0]]["type"] = PHOTO
        actor.manifest_path.write_text(json.dumps(manifest))
    return {key: digest for key, digest in originals(actor).items() if f"/extra_{attempt}_" in key}


def test_sigkill_at_random_instants_then_a_final_run_converges(tmp_path: Path):
    """A real process, killed with SIGKILL at random moments of its execute step, 15 times.

    The child is forked from this process so that each attempt spends its time applying the plan
    rather than importing modules; its file moves and generator are slowed a little.
    """
    actor = make_actor(tmp_path, {PHOTO: 30, BW: 1}, untyped=4)
    before = originals(actor)
    fork = multiprocessing.get_context("fork")
    rng = random.Random(20250101)
    killed = 0
    for attempt in range(15):
        before |= add_work(actor, attempt)
        started = fork.Event()
        child = fork.Process(target=run_child, args=(actor.folder, f"run{attempt:02d}", started))
        child.start()
        assert started.wait(30)
        time.sleep(rng.uniform(0.0, 0.3))
        child.kill()
        child.join()
        killed += child.exitcode == -signal.SIGKILL
        assert_nothing_lost(actor, before, settled=False)
    assert killed >= 10  # most attempts really were cut short

    final = fork.Process(target=run_child, args=(actor.folder, "final"))
    final.start()
    final.join()
    assert final.exitcode == 0
    assert categories(actor) == {PHOTO: 13, BW: 4, COLOR: 3}
    assert_settled(actor)
    assert_nothing_lost(actor, before)
    assert plan_for(actor).is_balanced


# --- prompts -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "descriptor"),
    [
        ("0046_european_25_female", "a 25-year-old european female"),
        ("0102_asian_80_male", "an 80-year-old asian male"),
        ("0007_african_male", "an african male"),
        ("mia", "mia"),
        ("0046", "the person"),
    ],
)
def test_actor_descriptor(name: str, descriptor: str):
    assert actor_descriptor(Actor(name, Path("/nowhere") / name)) == descriptor


# --- hostile files in an actor's folders ---------------------------------------------------------


def folder_of_length(base: Path, length: int) -> Path:
    """A folder whose absolute path is exactly ``length`` characters (components of 200)."""
    folder = base
    while len(str(folder)) < length - 202:
        folder = folder / ("d" * 200)
    folder = folder / ("e" * (length - len(str(folder)) - 1))
    folder.mkdir(parents=True)
    return folder


def test_a_removal_whose_destination_is_too_long_is_rolled_back(tmp_path: Path):
    """The image's path fits the OS limit in training_data but not in its removal folder: the
    removal must not stay half done, failing the actor on every run and blocking --restore."""
    root = folder_of_length(tmp_path, 3856)
    actor = make_actor(root, {PHOTO: 3}, name="a")
    long_name = "l" * 200 + ".jpg"
    shutil.copy(actor.training_dir / "a_1.jpg", actor.training_dir / long_name)
    plan = Plan(
        counts={},
        percentages={},
        targets={},
        is_balanced=False,
        removals=(Removal(1, "a_2.jpg", PHOTO, 1, "test"), Removal(4, long_name, PHOTO, 1, "t")),
        generations={},
    )
    before = file_hashes(actor.folder)

    with pytest.raises(ActorError) as caught:
        apply(actor, plan=plan)

    message = str(caught.value)
    assert message.startswith(f"cannot move {long_name} to ")
    assert message.endswith(
        "File name too long; the removal was rolled back, nothing was set aside"
    )
    assert file_hashes(actor.folder) == before
    assert recover(actor) == []
    assert restore_removed(actor).messages == [
        "nothing to restore: no execute run has removed images of a"
    ]


def test_unreadable_special_files_are_set_aside_and_restored_as_they_are(tmp_path: Path):
    actor = make_actor(tmp_path, {PHOTO: 3}, name="a")
    (actor.training_dir / "a_7.jpg").symlink_to("a_7.jpg")
    (actor.training_dir / "a_8.jpg").symlink_to(tmp_path / "gone.jpg")
    os.mkfifo(actor.training_dir / "a_9.jpg")
    removals = tuple(Removal(n, f"a_{n}.jpg", None, 1, "unreadable") for n in (7, 8, 9))
    plan = Plan({}, {}, {}, False, removals, {})

    result = within(30, apply, actor, plan=plan)

    assert [removal["filename"] for removal in result.removed] == ["a_7.jpg", "a_8.jpg", "a_9.jpg"]
    folder = actor.removed_dir / RUN
    assert (folder / "a_7.jpg").is_symlink() and (folder / "a_8.jpg").is_symlink()
    assert stat.S_ISFIFO(os.lstat(folder / "a_9.jpg").st_mode)
    within(30, restore_removed, actor)
    assert stat.S_ISFIFO(os.lstat(actor.training_dir / "a_9.jpg").st_mode)
    assert os.readlink(actor.training_dir / "a_7.jpg") == "a_7.jpg"


def test_a_fifo_named_like_a_generated_image_does_not_block_recovery(tmp_path: Path):
    actor = make_actor(tmp_path, {PHOTO: 3}, name="a")
    os.mkfifo(actor.training_dir / "a_4.jpg")

    assert within(30, recover, actor) == []


@pytest.mark.parametrize("kind", ["FIFO", "nested"])
def test_a_hostile_removal_journal_fails_the_actor_with_one_line(tmp_path: Path, kind: str):
    actor = make_actor(tmp_path, {PHOTO: 3}, name="a")
    journal = actor.removed_dir / RUN / "removal.json"
    journal.parent.mkdir(parents=True)
    if kind == "FIFO":
        os.mkfifo(journal)
    else:
        journal.write_text("[" * 1000 + "]" * 1000)

    with pytest.raises(ActorError) as caught:
        within(30, recover, actor)

    reason = "not a regular file (a FIFO)" if kind == "FIFO" else "nested more than 64 levels deep"
    assert str(caught.value) == f"removal journal {journal} is unreadable ({reason}); move it aside"
