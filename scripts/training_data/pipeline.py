"""One actor's step, top to bottom: load, evaluate, plan, write the review, apply (--execute).

The runner calls ``process_actor`` once per actor. It raises ``ActorError`` for a fault of this
actor alone and ``FatalRunError`` for one that would fail every actor alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from training_data.config import Config
from training_data.dataset import (
    Actor,
    TrainingImage,
    list_training_images,
    load_training_images,
    make_session,
    read_manifest,
)
from training_data.evaluation import (
    ActorEvaluation,
    EvaluationBackend,
    EvaluationCache,
    evaluate_actor,
    make_backend,
)
from training_data.execute import ExecutionResult, apply_plan, recover
from training_data.generation import Generator, make_generator
from training_data.plan import Plan, make_plan
from training_data.report import evaluation_document, write_composite, write_evaluation_json
from training_data.review_site import ReviewSite, actor_state

NO_IMAGES = "no training images"


@dataclass
class RunContext:
    """What every actor of a run shares: settings, connections, the cache and the generator."""

    config: Config
    output_dir: Path
    execute: bool
    session: requests.Session
    backend: EvaluationBackend
    cache: EvaluationCache
    generator: Generator | None
    run_timestamp: str
    review: ReviewSite

    @classmethod
    def create(
        cls, config: Config, output_dir: Path, *, execute: bool, data_dir: Path | None = None
    ) -> RunContext:
        session = make_session(config.download)
        return cls(
            config=config,
            output_dir=output_dir,
            execute=execute,
            session=session,
            backend=make_backend(config),
            cache=EvaluationCache(output_dir / "cache"),
            generator=make_generator(config.generator, session) if execute else None,
            run_timestamp=datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
            review=ReviewSite.open(output_dir, data_dir),
        )


@dataclass
class ActorOutcome:
    """What happened to one actor, for the console and the FINAL SUMMARY."""

    skipped_reason: str | None = None
    plan: Plan | None = None
    execution: ExecutionResult | None = None
    balanced_after: bool | None = None
    cache_hits: int = 0
    lines: list[str] = field(default_factory=list)

    @property
    def was_balanced(self) -> bool:
        return self.plan is not None and self.plan.is_balanced

    @property
    def left_unbalanced(self) -> bool:
        """An execute run that could not reach the target (e.g. a generation failed)."""
        return self.balanced_after is False


def process_actor(actor: Actor, context: RunContext) -> ActorOutcome:
    recovered = recover(actor)  # finish what an interrupted execute left half done
    images = load_training_images(actor, context.session, context.config.download)
    if not images:
        context.review.record_skipped(actor.name, NO_IMAGES)
        return ActorOutcome(skipped_reason=NO_IMAGES, lines=[f"  skipped: {NO_IMAGES}"])
    evaluation = evaluate_actor(images, context.config, context.backend, context.cache)
    plan = make_plan(evaluation.images, context.config.target)
    outcome = ActorOutcome(
        plan=plan,
        cache_hits=evaluation.evaluator.get("cache_hits", 0),
        lines=[f"  {message}" for message in recovered] + describe_plan(plan),
    )
    execution_record: dict[str, Any] | None = None
    if context.execute and not plan.is_balanced:
        execution_record = _apply(actor, images, evaluation, plan, context, outcome)
    document = evaluation_document(actor.name, evaluation, plan, context.config, execution_record)
    state, _reason = actor_state(document)
    write_composite(context.output_dir, actor.name, evaluation, plan, state)
    write_evaluation_json(context.output_dir, actor.name, document)
    context.review.update_actor(document, evaluation.thumbnails)
    return outcome


def _apply(
    actor: Actor,
    images: list[TrainingImage],
    evaluation: ActorEvaluation,
    plan: Plan,
    context: RunContext,
    outcome: ActorOutcome,
) -> dict[str, Any]:
    """Apply the plan, then evaluate again so the record says where the actor really stands."""
    result = apply_plan(
        actor,
        images,
        plan,
        context.generator,
        context.config.prompts,
        context.run_timestamp,
        source_ranking=best_photos(evaluation, plan),
    )
    after_images = list_training_images(actor, read_manifest(actor))
    after = evaluate_actor(after_images, context.config, context.backend, context.cache)
    after_plan = make_plan(after.images, context.config.target)
    outcome.execution = result
    outcome.balanced_after = after_plan.is_balanced
    outcome.lines += describe_execution(result, after_plan)
    return result.to_dict() | {"after": after_plan.to_dict()}


def best_photos(evaluation: ActorEvaluation, plan: Plan) -> list[str]:
    """Photorealistic images that stay, best first: the local generator's sources."""
    removed = {removal.number for removal in plan.removals}
    photos = [
        image
        for image in evaluation.images
        if image.type == "photorealistic" and image.number not in removed and not image.unusable
    ]
    photos.sort(key=lambda image: (-image.quality_score, image.number))
    return [image.filename for image in photos]


def describe_plan(plan: Plan) -> list[str]:
    counts = "/".join(str(count) for count in plan.counts.values())
    targets = "/".join(str(count) for count in plan.targets.values())
    if plan.is_balanced:
        return [f"  balanced: {counts} (target {targets})"]
    lines = [f"  unbalanced: {counts} (target {targets})"]
    for removal in plan.removals:
        lines.append(f"  remove #{removal.number} {removal.filename}: {removal.reason}")
    for category, count in plan.generations.items():
        lines.append(f"  generate {count} {category}")
    return lines


def describe_execution(result: ExecutionResult, after: Plan) -> list[str]:
    lines = [
        f"  executed: removed {len(result.removed)}, generated {len(result.generated)}, "
        f"unfulfilled {sum(result.unfulfilled.values())}"
    ]
    lines += [f"  {message}" for message in result.messages]
    counts = "/".join(str(count) for count in after.counts.values())
    state = "balanced" if after.is_balanced else "STILL UNBALANCED"
    lines.append(f"  after: {counts} - {state}")
    return lines
