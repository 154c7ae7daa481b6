"""Generators: the offline local one, and Replicate against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import json
import logging
import time
from itertools import combinations
from pathlib import Path

import pytest
import requests
from execute_helpers import BW, COLOR, PHOTO, synthetic_photo
from PIL import Image, ImageChops, ImageFilter, ImageStat
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from training_data.config import GeneratorConfig, ReplicateConfig
from training_data.dataset import Actor
from training_data.errors import ActorError, FatalRunError
from training_data.evaluation import decode_working_image
from training_data.generation import (
    GenerationRequest,
    LocalGenerator,
    ReplicateGenerator,
    make_generator,
)

TOKEN = "r8_test-secret-token-0123456789"
MODEL = "black-forest-labs/flux-kontext-pro"
CREATE_PATH = f"/v1/models/{MODEL}/predictions"


@pytest.fixture
def actor(tmp_path: Path) -> Actor:
    actor = Actor("0046_european_25_female", tmp_path / "0046_european_25_female")
    actor.training_dir.mkdir(parents=True)
    return actor


@pytest.fixture
def photo(actor: Actor) -> Path:
    path = actor.training_dir / "photo.jpg"
    synthetic_photo(7, (480, 600)).save(path, quality=92)
    return path


def request_for(actor: Actor, source: Path, category: str, variant: int) -> GenerationRequest:
    return GenerationRequest(actor, category, f"a {category} of her", (source,), variant)


def dhash(image: Image.Image) -> int:
    small = image.convert("L").resize((9, 8), Image.Resampling.LANCZOS)
    pixels = small.tobytes()
    bits = 0
    for row in range(8):
        for column in range(8):
            left, right = pixels[row * 9 + column], pixels[row * 9 + column + 1]
            bits = (bits << 1) | (left > right)
    return bits


def distance(one: Image.Image, two: Image.Image) -> int:
    return (dhash(one) ^ dhash(two)).bit_count()


def grey_levels(image: Image.Image) -> int:
    """How many of 16 tone bands hold at least 2% of the pixels: a photo spreads over many."""
    histogram = image.convert("L").histogram()
    total = sum(histogram)
    return sum(sum(histogram[i : i + 16]) / total >= 0.02 for i in range(0, 256, 16))


def chroma(image: Image.Image) -> float:
    red, green, blue = image.convert("RGB").split()
    return max(
        ImageStat.Stat(ImageChops.difference(red, green)).mean[0],
        ImageStat.Stat(ImageChops.difference(green, blue)).mean[0],
    )


def flat_share(image: Image.Image) -> float:
    """Share of pixels whose 3x3 neighbourhood is nearly one colour: flat paint, not grain."""
    rgb = image.convert("RGB").reduce(2)
    spread = ImageChops.subtract(
        rgb.filter(ImageFilter.MaxFilter(3)), rgb.filter(ImageFilter.MinFilter(3))
    ).convert("L")
    histogram = spread.histogram()
    return sum(histogram[:10]) / sum(histogram)


def saturation(image: Image.Image) -> float:
    return ImageStat.Stat(image.convert("HSV").split()[1]).mean[0]


# --- local ----------------------------------------------------------------------------------------


def test_local_variants_are_distinct_and_not_copies_of_the_source(actor: Actor, photo: Path):
    generator = LocalGenerator()
    source = Image.open(photo)
    for category in (BW, COLOR):
        outputs = [
            Image.open(io.BytesIO(generator.generate(request_for(actor, photo, category, v))))
            for v in range(6)
        ]
        assert all(output.format == "JPEG" for output in outputs)
        assert all(min(output.size) >= 256 for output in outputs)
        distances = [distance(one, two) for one, two in combinations(outputs, 2)]
        assert min(distances) > 8, (category, distances)  # the evaluator's near-duplicate cut
        assert min(distance(output, source) for output in outputs) > 0


def test_local_output_is_the_same_for_the_same_request(actor: Actor, photo: Path):
    generator = LocalGenerator()
    request = request_for(actor, photo, COLOR, 3)
    assert generator.generate(request) == generator.generate(request)


def test_local_outputs_look_drawn_not_photographed(actor: Actor, photo: Path):
    generator = LocalGenerator()
    source = Image.open(photo)
    assert grey_levels(source) >= 8 and chroma(source) > 5  # the test photo is photo-like
    for variant in range(6):
        drawing = Image.open(io.BytesIO(generator.generate(request_for(actor, photo, BW, variant))))
        assert chroma(drawing) < 1.5, variant  # black and white
        assert grey_levels(drawing) <= 5, variant  # ink, hatching: a few tones, not a gradient
    for variant in range(6):
        painting = Image.open(
            io.BytesIO(generator.generate(request_for(actor, photo, COLOR, variant)))
        )
        assert chroma(painting) > 5, variant
        assert flat_share(painting) > flat_share(source) + 0.4, variant  # flat paint
        assert saturation(painting) >= saturation(source), variant


def test_local_colour_images_from_a_grey_photo_have_colour(actor: Actor):
    grey = actor.training_dir / "grey.jpg"
    synthetic_photo(5, (480, 600)).convert("L").save(grey)
    for variant in range(6):
        painting = Image.open(
            io.BytesIO(LocalGenerator().generate(request_for(actor, grey, COLOR, variant)))
        )
        assert chroma(painting) > 5 and saturation(painting) > 60, variant


def test_local_outputs_are_classified_as_their_category(actor: Actor, photo: Path):
    """The local evaluator (style.py) sees each generated image as the category it was made for."""
    style = pytest.importorskip("training_data.style")
    grey = actor.training_dir / "grey.jpg"
    synthetic_photo(5, (480, 600)).convert("L").save(grey)
    for source in (photo, grey):
        assert style.classify_style(decode_working_image(source.read_bytes())[0])[0] == PHOTO
        for category in (BW, COLOR):
            for variant in range(6):
                data = LocalGenerator().generate(request_for(actor, source, category, variant))
                working = decode_working_image(data)[0]
                assert style.classify_style(working)[0] == category, (source.name, variant)


def test_local_cannot_make_photorealistic_images(actor: Actor, photo: Path):
    generator = LocalGenerator()
    assert not generator.can_generate(PHOTO)
    assert generator.can_generate(BW) and generator.can_generate(COLOR)
    with pytest.raises(ActorError, match="cannot make photorealistic"):
        generator.generate(request_for(actor, photo, PHOTO, 0))


def test_local_fails_one_image_on_a_broken_source(actor: Actor):
    broken = actor.training_dir / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ActorError, match=r"cannot read source image broken\.jpg"):
        LocalGenerator().generate(request_for(actor, broken, BW, 0))
    thumbnail = actor.training_dir / "thumbnail.jpg"
    synthetic_photo(1, (200, 300)).save(thumbnail)
    with pytest.raises(ActorError, match=r"thumbnail\.jpg is too small to draw from \(200x300"):
        LocalGenerator().generate(request_for(actor, thumbnail, BW, 0))
    with pytest.raises(ActorError, match="no photo or base image"):
        LocalGenerator().generate(GenerationRequest(actor, BW, "x", (), 0))


def test_make_generator_backends(monkeypatch: pytest.MonkeyPatch):
    assert make_generator(GeneratorConfig(backend="none")) is None
    assert isinstance(make_generator(GeneratorConfig(backend="local")), LocalGenerator)
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    with pytest.raises(FatalRunError, match="REPLICATE_API_TOKEN is not set"):
        make_generator(GeneratorConfig(backend="replicate"))
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    generator = make_generator(GeneratorConfig(backend="replicate"))
    assert isinstance(generator, ReplicateGenerator) and generator.model == MODEL


# --- replicate ------------------------------------------------------------------------------------


def output_png() -> bytes:
    buffer = io.BytesIO()
    synthetic_photo(11, (320, 400)).save(buffer, "PNG")
    return buffer.getvalue()


def prediction(server: HTTPServer, status: str, **extra: object) -> dict[str, object]:
    return {
        "id": "p123",
        "status": status,
        "urls": {
            "get": server.url_for("/v1/predictions/p123"),
            "cancel": server.url_for("/v1/predictions/p123/cancel"),
        },
        **extra,
    }


def replicate(server: HTTPServer, timeout: float = 20.0) -> ReplicateGenerator:
    config = ReplicateConfig(base_url=server.url_for("/v1"), model=MODEL, timeout=timeout)
    return ReplicateGenerator(config, TOKEN, requests.Session(), poll_interval=0.05)


def check_create(request: Request) -> None:
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Prefer"].startswith("wait")
    body = json.loads(request.get_data())
    assert body["input"]["prompt"] == f"a {BW} of her"
    header, _, payload = body["input"]["input_image"].partition(",")
    assert header == "data:image/jpeg;base64"
    assert Image.open(io.BytesIO(base64.b64decode(payload))).format == "JPEG"


@pytest.fixture
def quiet_log(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]):
    """Every Replicate test also checks that the token reached no log line and no output."""
    caplog.set_level(logging.DEBUG)
    yield caplog
    printed = capfd.readouterr()
    assert TOKEN not in caplog.text + printed.out + printed.err


def test_replicate_success_with_prefer_wait(
    httpserver: HTTPServer, actor: Actor, photo: Path, quiet_log
):
    def create(request: Request) -> Response:
        check_create(request)
        body = prediction(httpserver, "succeeded", output=[httpserver.url_for("/files/out.png")])
        return Response(json.dumps(body), status=201, content_type="application/json")

    httpserver.expect_oneshot_request(CREATE_PATH, method="POST").respond_with_handler(create)
    httpserver.expect_oneshot_request("/files/out.png").respond_with_data(
        output_png(), content_type="image/png"
    )
    data = replicate(httpserver).generate(request_for(actor, photo, BW, 0))
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG" and image.size == (320, 400)
    download = httpserver.log[-1][0]
    assert "Authorization" not in download.headers or download.headers["Authorization"]
    httpserver.check_assertions()


def test_replicate_success_after_polling(
    httpserver: HTTPServer, actor: Actor, photo: Path, quiet_log
):
    states = iter(["processing", "processing", "succeeded"])

    def poll(request: Request) -> Response:
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        status = next(states)
        extra = {"output": httpserver.url_for("/files/out.jpg")} if status == "succeeded" else {}
        return Response(json.dumps(prediction(httpserver, status, **extra)))

    httpserver.expect_oneshot_request(CREATE_PATH, method="POST").respond_with_json(
        prediction(httpserver, "starting"), status=201
    )
    httpserver.expect_request("/v1/predictions/p123").respond_with_handler(poll)
    jpeg = io.BytesIO()
    synthetic_photo(3, (300, 300)).save(jpeg, "JPEG")
    httpserver.expect_oneshot_request("/files/out.jpg").respond_with_data(jpeg.getvalue())
    data = replicate(httpserver).generate(request_for(actor, photo, BW, 0))
    assert data == jpeg.getvalue()  # a JPEG output is kept byte for byte
    posts = [entry for entry, _ in httpserver.log if entry.method == "POST"]
    assert len(posts) == 1


def test_replicate_failed_prediction_fails_that_image(
    httpserver: HTTPServer, actor: Actor, photo: Path, quiet_log
):
    httpserver.expect_oneshot_request(CREATE_PATH, method="POST").respond_with_json(
        prediction(httpserver, "starting"), status=201
    )
    httpserver.expect_request("/v1/predictions/p123").respond_with_json(
        prediction(httpserver, "failed", error="NSFW content detected")
    )
    with pytest.raises(ActorError, match="prediction p123 failed: NSFW content detected"):
        replicate(httpserver).generate(request_for(actor, photo, BW, 0))


def test_replicate_honours_retry_after_on_429(
    httpserver: HTTPServer, actor: Actor, photo: Path, quiet_log
):
    httpserver.expect_oneshot_request(CREATE_PATH, method="POST").respond_with_response(
        Response('{"detail": "slow down"}', status=429, headers={"Retry-After": "1"})
    )
    httpserver.expect_oneshot_request(CREATE_PATH, method="POST").respond_with_json(
        prediction(httpserver, "succeeded", output=httpserver.url_for("/files/out.png")),
        status=201,
    )
    httpserver.expect_oneshot_request("/files/out.png").respond_with_data(output_png())
    started = time.monotonic()
    replicate(httpserver).generate(request_for(actor, photo, BW, 0))
    assert time.monotonic() - started >= 1.0  # waited as long as the server asked
    first, second = (entry for entry, _ in httpserver.log if entry.method == "POST")
    assert first.get_data() == second.get_data()


def test_replicate_times_out_per_image_and_cancels(
    httpserver: HTTPServer, actor: Actor, photo: Path, quiet_log
):
    httpserver.expect_oneshot_request(CREATE_PATH, method="POST").respond_with_json(
        prediction(httpserver, "starting"), status=201
    )
    httpserver.expect_request("/v1/predictions/p123").respond_with_json(
        prediction(httpserver, "processing")
    )
    httpserver.expect_oneshot_request(
        "/v1/predictions/p123/cancel", method="POST"
    ).respond_with_json(prediction(httpserver, "canceled"))
    with pytest.raises(ActorError, match=r"did not finish within 1\.5 s"):
        replicate(httpserver, timeout=1.5).generate(request_for(actor, photo, BW, 0))
    assert any(entry.path.endswith("/cancel") for entry, _ in httpserver.log)


def test_replicate_never_repeats_a_create_that_got_no_answer(
    httpserver: HTTPServer, actor: Actor, photo: Path, quiet_log
):
    creates = []

    def hang(request: Request) -> Response:
        creates.append(request.path)
        time.sleep(2.5)  # longer than the image's whole time limit
        return Response("{}", status=201)

    httpserver.expect_request(CREATE_PATH, method="POST").respond_with_handler(hang)
    with pytest.raises(ActorError, match="not sent again"):
        replicate(httpserver, timeout=2).generate(request_for(actor, photo, BW, 0))
    assert creates == [CREATE_PATH]


@pytest.mark.parametrize("status", [401, 403])
def test_replicate_rejected_token_stops_the_run(
    httpserver: HTTPServer, actor: Actor, photo: Path, quiet_log, status: int
):
    httpserver.expect_request(CREATE_PATH, method="POST").respond_with_json(
        {"detail": f"Invalid token {TOKEN}"}, status=status
    )
    with pytest.raises(FatalRunError) as raised:
        replicate(httpserver).generate(request_for(actor, photo, BW, 0))
    message = str(raised.value)
    assert f"HTTP {status}" in message and "REPLICATE_API_TOKEN" in message
    assert TOKEN not in message and "\n" not in message


def test_replicate_error_details_never_carry_the_token(
    httpserver: HTTPServer, actor: Actor, photo: Path, quiet_log
):
    httpserver.expect_request(CREATE_PATH, method="POST").respond_with_json(
        {"detail": f"input rejected for Bearer {TOKEN}"}, status=422
    )
    with pytest.raises(ActorError) as raised:
        replicate(httpserver).generate(request_for(actor, photo, BW, 0))
    assert "HTTP 422" in str(raised.value) and TOKEN not in str(raised.value)


def test_replicate_busy_polls_are_retried(
    httpserver: HTTPServer, actor: Actor, photo: Path, quiet_log
):
    answers = iter(
        [
            Response("busy", status=503),
            Response("slow", status=429, headers={"Retry-After": "0"}),
            Response(
                json.dumps(
                    prediction(httpserver, "succeeded", output=httpserver.url_for("/files/out.png"))
                )
            ),
        ]
    )
    httpserver.expect_oneshot_request(CREATE_PATH, method="POST").respond_with_json(
        prediction(httpserver, "starting"), status=201
    )
    httpserver.expect_request("/v1/predictions/p123").respond_with_handler(
        lambda request: next(answers)
    )
    httpserver.expect_oneshot_request("/files/out.png").respond_with_data(output_png())
    assert (
        Image.open(
            io.BytesIO(replicate(httpserver).generate(request_for(actor, photo, BW, 0)))
        ).format
        == "JPEG"
    )


def test_replicate_rejects_an_output_that_is_not_an_image(
    httpserver: HTTPServer, actor: Actor, photo: Path, quiet_log
):
    httpserver.expect_oneshot_request(CREATE_PATH, method="POST").respond_with_json(
        prediction(httpserver, "succeeded", output=httpserver.url_for("/files/out.png")),
        status=201,
    )
    httpserver.expect_oneshot_request("/files/out.png").respond_with_data(b"<html>gone</html>")
    with pytest.raises(ActorError, match="not a readable image"):
        replicate(httpserver).generate(request_for(actor, photo, BW, 0))


def test_replicate_does_not_send_the_token_to_another_host(
    httpserver: HTTPServer, actor: Actor, photo: Path, quiet_log
):
    """A prediction whose urls.get points elsewhere is polled at the configured API instead."""
    body = prediction(httpserver, "starting")
    body["urls"] = {"get": "http://127.0.0.2:9/steal"}
    httpserver.expect_oneshot_request(CREATE_PATH, method="POST").respond_with_json(
        body, status=201
    )
    httpserver.expect_request("/v1/predictions/p123").respond_with_json(
        prediction(httpserver, "succeeded", output=httpserver.url_for("/files/out.png"))
    )
    httpserver.expect_oneshot_request("/files/out.png").respond_with_data(output_png())
    replicate(httpserver).generate(request_for(actor, photo, BW, 0))
    assert any(entry.path == "/v1/predictions/p123" for entry, _ in httpserver.log)
