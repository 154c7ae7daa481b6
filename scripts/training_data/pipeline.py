"""One actor's step, top to bottom: load, evaluate, plan, write the review, apply (--execute).

The runner calls ``process_actor`` once per actor. It raises ``ActorError`` for a fault of this
actor alone and ``FatalRunError`` for one that would fail every actor alike.

An execute stopped between moving an actor's files and writing its evaluation JSON would leave
the next run finding the set balanced and calling it so, with no record of what was moved. So
before applying a plan the step writes ``<actor>_execute_started.json`` in the output folder,
naming the run; the runner removes it only once the progress store has recorded the actor (a stop
between the JSON and that record would otherwise leave the next run calling the actor balanced
and overwriting its execution record). A run that finds it reads back what those runs did (their
removal journals, the manifest entries of the images they generated), finishes what is left, and
records both as one execution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from training_data.atomic import write_json_atomic
from training_data.config import Config
from training_data.dataset import (
    Actor,
    TrainingImage,
    base_images,
    list_training_images,
    load_training_images,
    make_session,
    read_manifest,
)
from training_data.errors import ActorError
from training_data.evaluation import (
    ActorEvaluation,
    EvaluationBackend,
    EvaluationCache,
    ImageEvaluation,
    LocalBackend,
    evaluate_actor,
)
from training_data.execute import (
    ExecutionResult,
    apply_plan,
    combined,
    execution_of_runs,
    recover,
)
from training_data.files import UnreadableFile, parse_json, read_regular_file
from training_data.generation import Generator, LocalGenerator, make_generator
from training_data.plan import (
    REBALANCED,
    SHORT,
    SKIPPED,
    GeneratorAbility,
    Plan,
    make_plan,
)
from training_data.report import evaluation_document, write_composite, write_evaluation_json
from training_data.review_site import ReviewEntry, ReviewSite
from training_data.subject import ISSUES, SUBJECT_CHECK_NAME
from training_data.verdict_files import ActorVerdictFile, ActorVerdictFiles
from training_data.wording import plural, slashed

NO_IMAGES = "no training images"
EXECUTE_STARTED_SUFFIX = "_execute_started.json"
FACE_FAULTS = frozenset(ISSUES)  # a generator source shows one whole, sharp face of the actor


@dataclass
class RunContext:
    """What every actor of a run shares: settings, connections, the cache and the generator."""

    config: Config
    output_dir: Path
    execute: bool
    session: requests.Session
    backend: EvaluationBackend
    cache: EvaluationCache | ActorVerdictFiles
    generator: Generator | None
    run_timestamp: str
    review: ReviewSite

    @classmethod
    def create(
        cls,
        config: Config,
        output_dir: Path,
        *,
        execute: bool,
        data_dir: Path | None = None,
        sharded: bool = False,
        run_timestamp: str | None = None,
        in_worker: bool = False,
    ) -> RunContext:
        """``sharded``: the NFS-safe cache of files per actor. ``in_worker``: a worker process's
        context, with the run's timestamp and the review site unopened (the runner's process
        owns its index)."""
        session = make_session(config.download)
        cache_dir = output_dir / "cache"
        return cls(
            config=config,
            output_dir=output_dir,
            execute=execute,
            session=session,
            backend=make_backend(config),
            cache=ActorVerdictFiles(cache_dir) if sharded else EvaluationCache(cache_dir),
            generator=make_generator(config.generator, session) if execute else None,
            run_timestamp=run_timestamp or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
            review=ReviewSite.for_worker(output_dir, data_dir)
            if in_worker
            else ReviewSite.open(output_dir, data_dir, config.limits.max_file_bytes),
        )

    def actor_cache(self, actor_name: str) -> EvaluationCache | ActorVerdictFile:
        if isinstance(self.cache, ActorVerdictFiles):
            return self.cache.for_actor(actor_name)
        return self.cache


@dataclass
class ActorOutcome:
    """What happened to one actor, for the console and the FINAL SUMMARY."""

    state: str
    state_reason: str = ""
    plan: Plan | None = None
    execution: ExecutionResult | None = None
    cache_hits: int = 0
    lines: list[str] = field(default_factory=list)
    review: ReviewEntry | None = None  # the review index row, put by the runner's process
    usage: dict[str, Any] = field(default_factory=dict)  # the backend's totals so far
    worker: int = 0  # the worker process's pid (its usage counts replace its earlier ones)


def make_backend(config: Config) -> EvaluationBackend:
    """The configured evaluator. Made here, not in evaluation.py, so that evaluation.py never
    imports evaluation_openai (which imports evaluation and report): imports stay one-way."""
    if config.evaluator.backend == "openai":
        from training_data.evaluation_openai import OpenAIBackend

        return OpenAIBackend(config.evaluator.openai, config.categories)
    if config.evaluator.escalate == "openai":
        from training_data.escalation import make_escalating_backend

        return make_escalating_backend(config)
    return LocalBackend(config.quality, config.style, config.nsfw, config.subject, config=config)


def process_actor(actor: Actor, context: RunContext) -> ActorOutcome:
    recovered = recover(actor)  # finish what an interrupted execute left half done
    interrupted_runs = execute_started_runs(context.output_dir, actor.name, actor.max_file_bytes)
    manifest, images = load_training_images(actor, context.session, context.config.download)
    if not images:
        return ActorOutcome(
            state=SKIPPED,
            state_reason=NO_IMAGES,
            lines=[describe_state(SKIPPED, NO_IMAGES)],
        )
    references, checks_off = base_images(actor), checks_turned_off(manifest)
    cache = context.actor_cache(actor.name)
    evaluation = evaluate_actor(
        images, context.config, context.backend, cache, references, checks_off
    )
    if context.config.evaluator.escalate != "none":
        from training_data.escalation import escalation_record

        evaluation.evaluator["escalation"] = escalation_record(
            evaluation.images, evaluation.evaluator["usage"]
        )
    plan = plan_for(evaluation, references, context.config)
    outcome = ActorOutcome(
        state=plan.state,
        state_reason=plan.short_reason,
        plan=plan,
        cache_hits=evaluation.evaluator.get("cache_hits", 0),
        lines=[f"  {message}" for message in recovered] + describe_plan(plan),
    )
    interrupted = execution_of_runs(actor, interrupted_runs) if interrupted_runs else None
    if interrupted and not (interrupted.removed or interrupted.generated):
        interrupted = None  # stopped before it changed anything
    if interrupted:
        interrupted.messages.insert(0, interrupted_message(interrupted_runs, interrupted))
    execution_record: dict[str, Any] | None = None
    if context.execute and (plan.has_actions or interrupted):
        execution_record = _apply(
            actor, images, evaluation, plan, context, cache, outcome, interrupted, interrupted_runs
        )
    elif interrupted:
        outcome.lines.append(f"  {interrupted.messages[0]}; the next --execute records it")
    outcome.lines.append(describe_state(outcome.state, outcome.state_reason))
    document = evaluation_document(actor.name, evaluation, plan, context.config, execution_record)
    document |= {"state": outcome.state, "state_reason": outcome.state_reason}
    write_composite(context.output_dir, actor.name, evaluation, plan, outcome.state)
    write_evaluation_json(context.output_dir, actor.name, document)
    outcome.review = context.review.publish_actor(document, evaluation.thumbnails)
    outcome.usage = context.backend.usage()
    return outcome


def plan_for(evaluation: ActorEvaluation, references: list[Path], config: Config) -> Plan:
    """The plan for what the configured generator can make for this actor (``references``: its
    base images, listed once by the caller)."""
    ability = generator_ability(config, has_source=_has_source(evaluation, references))
    return make_plan(evaluation.images, config.target, ability, config.plan)


def generator_ability(config: Config, *, has_source: bool) -> GeneratorAbility:
    """local: the stylized categories; replicate: all; none: nothing; no source image: nothing."""
    backend = config.generator.backend
    if backend == "none":
        return GeneratorAbility(
            frozenset(), "no generator is configured (generator.backend = none)"
        )
    if not has_source:
        return GeneratorAbility(frozenset(), "no photo or base image to generate them from")
    if backend == "local":
        return GeneratorAbility(
            frozenset(LocalGenerator.categories), "the local generator cannot make them"
        )
    return GeneratorAbility.everything(config.categories)


def _has_source(evaluation: ActorEvaluation, references: list[Path]) -> bool:
    """A source photo or a base image: what every generator starts from."""
    return any(is_source_photo(image) for image in evaluation.images) or bool(references)


def is_source_photo(image: ImageEvaluation) -> bool:
    """A usable photo; when the subject checks saw faces, with exactly one whole, sharp face of
    the actor (no face issue at all)."""
    return (
        image.type == "photorealistic"
        and not image.unusable
        and not FACE_FAULTS.intersection(image.issues)
    )


def _apply(
    actor: Actor,
    images: list[TrainingImage],
    evaluation: ActorEvaluation,
    plan: Plan,
    context: RunContext,
    cache: EvaluationCache | ActorVerdictFile,
    outcome: ActorOutcome,
    interrupted: ExecutionResult | None,
    interrupted_runs: list[str],
) -> dict[str, Any]:
    """Apply the plan, then evaluate again so the record says where the actor really stands;
    with what an interrupted execute of an earlier run did first, as one record."""
    result, after_plan = ExecutionResult(), plan
    if plan.has_actions:
        runs = [*interrupted_runs, context.run_timestamp]
        write_json_atomic(_execute_started_path(context.output_dir, actor.name), {"runs": runs})
        result = apply_plan(
            actor,
            images,
            plan,
            context.generator,
            context.config.prompts,
            context.run_timestamp,
            source_ranking=best_photos(evaluation, plan),
        )
        after_plan = _plan_after(actor, context, cache)
    if interrupted:
        result = combined(interrupted, result)
    outcome.execution = result
    outcome.state, outcome.state_reason = state_after_execute(result, after_plan, plan)
    outcome.lines += describe_execution(result, after_plan)
    return result.to_dict() | {"after": after_plan.to_dict()}


def _plan_after(
    actor: Actor, context: RunContext, cache: EvaluationCache | ActorVerdictFile
) -> Plan:
    """The plan for the actor as execute left it: evaluated again, from the actor's cache (the
    same object: a sharded run's verdict file is not read again)."""
    manifest, references = read_manifest(actor), base_images(actor)
    after = evaluate_actor(
        list_training_images(actor, manifest),
        context.config,
        context.backend,
        cache,
        references,
        checks_turned_off(manifest),
    )
    return plan_for(after, references, context.config)


def execute_started_runs(output_dir: Path, actor_name: str, max_file_bytes: int) -> list[str]:
    """The runs whose execute of this actor started and never wrote its evaluation JSON."""
    path = _execute_started_path(output_dir, actor_name)
    try:
        record = parse_json(read_regular_file(path, max_file_bytes).decode("utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError, UnreadableFile) as error:
        raise ActorError(f"{path} is unreadable ({error}); move it aside") from None
    runs = record.get("runs") if isinstance(record, dict) else None
    if not isinstance(runs, list) or not all(isinstance(run, str) for run in runs):
        raise ActorError(f"{path} is not valid: no list of runs; move it aside")
    return runs


def execute_has_begun(output_dir: Path, actor_name: str, max_file_bytes: int) -> bool:
    """An execute of this actor began and was never recorded: some files may have moved (a
    marker that cannot be read is the actor's error itself, not a sign of it)."""
    try:
        return bool(execute_started_runs(output_dir, actor_name, max_file_bytes))
    except ActorError:
        return False


def forget_execute_started(output_dir: Path, actor_name: str) -> None:
    """Called once the actor's outcome is recorded: its execute is no longer unaccounted for."""
    _execute_started_path(output_dir, actor_name).unlink(missing_ok=True)


def _execute_started_path(output_dir: Path, actor_name: str) -> Path:
    return Path(output_dir) / f"{actor_name}{EXECUTE_STARTED_SUFFIX}"


def interrupted_message(runs: list[str], interrupted: ExecutionResult) -> str:
    return (
        f"the execute of run {', '.join(runs)} was interrupted after it removed "
        f"{len(interrupted.removed)} and generated {len(interrupted.generated)} image(s)"
    )


def state_after_execute(result: ExecutionResult, after: Plan, planned: Plan) -> tuple[str, str]:
    """Rebalanced only when the set now is balanced; else short, saying what is missing.

    When execute did all it planned and the set is where the plan aimed, the reason is the
    plan's, as the dry-run said it: the set measured against the full target again would also
    call short the categories the plan itself cut down to the reachable mix.
    """
    if after.is_balanced:
        return REBALANCED, ""
    if not result.unfulfilled and not after.has_actions and planned.short_reason:
        return SHORT, planned.short_reason
    reasons = list(result.messages) if result.unfulfilled else []
    if after.short_reason:
        reasons.append(after.short_reason)
    elif not reasons:
        reasons.append(f"after execute {slashed(after.counts)}: {after.why_unbalanced}")
    return SHORT, "; ".join(reasons)


def checks_turned_off(manifest: dict[str, Any] | None) -> frozenset[str]:
    """``"subject_checks": false`` in the manifest: an actor that is not a person."""
    off = (manifest or {}).get("subject_checks") is False
    return frozenset({SUBJECT_CHECK_NAME}) if off else frozenset()


def best_photos(evaluation: ActorEvaluation, plan: Plan) -> list[str]:
    """Source photos that stay, best first: the local generator's sources."""
    removed = {removal.number for removal in plan.removals}
    photos = [
        image
        for image in evaluation.images
        if is_source_photo(image) and image.number not in removed
    ]
    photos.sort(key=lambda image: (-image.quality_score, image.number))
    return [image.filename for image in photos]


def describe_plan(plan: Plan) -> list[str]:
    """What execute will do, line by line, including what it cannot generate and why."""
    counts, targets = slashed(plan.counts), slashed(plan.targets)
    if plan.is_balanced:
        return [f"  balanced: {counts} (target {targets})"]
    lines = [f"  unbalanced: {counts} (target {targets}): {plan.why_unbalanced}"]
    for removal in plan.removals:
        lines.append(f"  remove #{removal.number} {removal.filename}: {removal.reason}")
    for category, count in plan.generations.items():
        lines.append(f"  generate {count} {category}")
    for category, missing in plan.short.items():
        lines.append(f"  cannot generate {missing} {category}")
    if plan.has_actions:
        planned = plan.planned_counts
        lines.append(f"  plan: {slashed(planned)} = {plural(sum(planned.values()), 'image')}")
    else:
        lines.append("  plan: nothing to change")
    return lines


def describe_execution(result: ExecutionResult, after: Plan) -> list[str]:
    lines = [
        f"  executed: removed {len(result.removed)}, generated {len(result.generated)}, "
        f"unfulfilled {sum(result.unfulfilled.values())}"
    ]
    lines += [f"  {message}" for message in result.messages]
    lines.append(f"  after: {slashed(after.counts)} (target {slashed(after.targets)})")
    return lines


def describe_state(state: str, reason: str) -> str:
    return f"  state: {state} ({reason})" if reason else f"  state: {state}"
