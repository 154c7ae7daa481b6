"""Escalation: the vision model decides only the styles the local stages cannot.

With ``[evaluator] escalate = "openai"`` the local backend judges every image as usual; the images
whose style it is unsure of (``is_unsure``) then go to the configured OpenAI-compatible model
through the ``openai`` backend itself: the same request (the image re-read at up to 512 px, or one
contact sheet of just these images in ``composite`` mode), strict-schema validation, retries,
usage counting and key handling; a missing key stops the run before progress is touched, as for
that backend. Its verdicts are cached with the local ones (the cache key holds both settings), so
a rerun sends nothing.

The vision model decides the category of an escalated image, and the local checks then judge its
defects and score for that category (a dark photo and a dark ink drawing differ), so every image
of an actor is scored on the same scale. The model's own score, issues and note are kept in
``measurements["style"]["vision_model"]`` and ``note``. ``measurements["style"]["stage"]`` says
which stage decided: ``"vision_model"`` here, the local stage's own name otherwise.

Measured on the 349 labelled images of tests/data/styles (scripts/measure_escalation.py, the
statistics alone, as by default), with the default band [0.3, 0.75]: 34% escalated (photos 45%,
b/w 13%, colour 36%); the local stage is right on 83% of what it keeps and on 56% of what it
sends, so a vision model right on what it is sent lifts 73.9% to at most 89.1% at 0.34 requests
per image. [0.2, 0.8] sends 55% for at most 94.3%; [0.3, 0.7] sends 26% for at most 85.4%.
In-sample figures: the classifier was fitted on this set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from training_data.config import Config
from training_data.evaluation import ImageEvaluation, ImageSample, Judgement, LocalBackend
from training_data.evaluation_openai import OpenAIBackend

VISION_STAGE = "vision_model"
LOCAL_STAGE = "statistics"
ESCALATION_VERSION = 1
TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")


def is_unsure(style: Mapping[str, Any] | None, band: tuple[float, float]) -> bool:
    """Whether the local stages leave this style undecided: the one rule escalation follows.

    ``style`` is a judgement's ``measurements["style"]`` (None for a manifest-typed image, whose
    type is trusted). The probability of the stage that decided lies within ``band``: the
    learned stage's where it ran (``stage`` "learned"), else the Pillow classifier's.
    """
    if not style:
        return False
    learned = style.get("stage") == "learned"  # the learned stage's own probability decided
    probability = style.get("learned_photo_probability" if learned else "photo_probability")
    if not isinstance(probability, int | float) or isinstance(probability, bool):
        return False
    low, high = band
    return low <= probability <= high


class EscalatingBackend:
    """The local backend, with its unsure style verdicts re-decided by a vision model."""

    name = "local+openai"

    def __init__(
        self, local: LocalBackend, vision: OpenAIBackend, band: tuple[float, float]
    ) -> None:
        self._local = local
        self._vision = vision
        self._band = band
        self._judged = 0
        self._escalated = 0

    def settings(self) -> dict[str, Any]:
        return {
            "version": ESCALATION_VERSION,
            "local": self._local.settings(),
            "vision_model": self._vision.settings(),
            "unsure": list(self._band),
        }

    def usage(self) -> dict[str, Any]:
        """Images judged this run, how many of them went to the vision model, its requests and
        tokens."""
        vision = self._vision.usage()
        return {"images_judged": self._judged, "escalated": self._escalated} | vision

    def judge(
        self, samples: list[ImageSample], categories: tuple[str, ...]
    ) -> dict[int, Judgement]:
        judgements = self._local.judge(samples, categories)
        for judgement in judgements.values():
            style = judgement.measurements.get("style")
            if isinstance(style, dict):
                style.setdefault("stage", LOCAL_STAGE)
        unsure = [s for s in samples if is_unsure(style_of(judgements[s.number]), self._band)]
        decided = self._vision.judge(unsure, categories) if unsure else {}
        for sample in unsure:
            judgements[sample.number] = self._decided(
                sample, judgements[sample.number], decided[sample.number]
            )
        self._judged += len(samples)
        self._escalated += len(unsure)
        return judgements

    def _decided(self, sample: ImageSample, local: Judgement, vision: Judgement) -> Judgement:
        """The vision model's category, the local defects and score for that category."""
        judgement = self._local.judge_as(sample, vision.type)
        style = dict(style_of(local) or {})
        style["stage"] = VISION_STAGE
        style["local_category"] = local.type
        style["vision_model"] = {"quality_score": vision.quality_score, "issues": vision.issues}
        judgement.measurements["style"] = style
        judgement.note = vision.note
        if "nsfw" in local.measurements:  # open_nsfw's score from the local pass still holds
            judgement.measurements["nsfw"] = local.measurements["nsfw"]
            judgement.issues += [issue for issue in local.issues if issue == "nsfw"]
        return judgement


def style_of(judgement: Judgement | ImageEvaluation) -> dict[str, Any] | None:
    style = judgement.measurements.get("style")
    return style if isinstance(style, dict) else None


def make_escalating_backend(config: Config) -> EscalatingBackend:
    """Raises FatalRunError, as the openai backend does, when the key is missing."""
    vision = OpenAIBackend(config.evaluator.openai, config.categories)
    band = (config.evaluator.unsure_min, config.evaluator.unsure_max)
    local = LocalBackend(config.quality, config.style, config.nsfw, config.subject, config=config)
    return EscalatingBackend(local, vision, band)


def escalation_record(
    images: Sequence[ImageEvaluation], usage: Mapping[str, Any]
) -> dict[str, Any]:
    """One actor's share of images whose style the vision model decided (cached verdicts
    included), and the requests and tokens this actor's evaluation cost (``usage``: the actor's
    own, as ``evaluate_actor`` records it)."""
    styled = [image for image in images if style_of(image) is not None]
    escalated = [image for image in styled if style_of(image).get("stage") == VISION_STAGE]
    record: dict[str, Any] = {
        "styled_locally": len(styled),
        "escalated": len(escalated),
        "share": round(len(escalated) / len(styled), 3) if styled else 0.0,
    }
    for name in ("requests", *TOKEN_FIELDS):
        record[name] = usage.get(name, 0)
    return record
