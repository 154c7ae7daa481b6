"""The TOML config: built-in defaults, strict validation, and the result fingerprint.

Every key is optional. An unknown key or a bad value raises ``ConfigError`` whose message names the
key, so the CLI can print one line and exit 2. Secrets never live here: they come from the
environment.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from training_data.files import UnreadableFile, read_regular_file

DEFAULT_MIX: dict[str, float] = {
    "photorealistic": 0.65,
    "bw_stylized": 0.20,
    "color_stylized": 0.15,
}

DEFAULT_PROMPTS: dict[str, list[str]] = {
    "photorealistic": [
        "a natural photograph of {descriptor}, soft daylight, looking at the camera, sharp focus",
        "a candid photo portrait of {descriptor}, shallow depth of field, 50mm lens",
    ],
    "bw_stylized": [
        "a black-and-white ink drawing of {descriptor}, bold clean linework, white background",
        "a graphite pencil sketch of {descriptor}, cross-hatched shading, monochrome",
    ],
    "color_stylized": [
        "a colorful comic-book illustration of {descriptor}, cel shading, flat colors",
        "a watercolor painting of {descriptor}, loose brush strokes, vivid palette",
    ],
}

GENERIC_PROMPT = "a {category} image of {descriptor}"

# What the local evaluator's style classifier can answer (style.classify_style).
LOCAL_CATEGORIES: tuple[str, ...] = ("photorealistic", "bw_stylized", "color_stylized")

# How the openai evaluator's prompt describes each category; a custom one needs its own.
CATEGORY_DESCRIPTIONS: dict[str, str] = {
    "photorealistic": "photographs and photo-like renders, including grayscale photos",
    "bw_stylized": (
        "black-and-white or grayscale illustration: ink, pencil, charcoal, manga, woodcut"
    ),
    "color_stylized": "color illustration: comic, watercolor, digital painting, cel shading",
}


class ConfigError(ValueError):
    """A config problem the user must fix; the message names the key."""


@dataclass(frozen=True)
class TargetConfig:
    total: int = 20
    tolerance: float = 0.10
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(self.mix)


@dataclass(frozen=True)
class PlanConfig:
    """What a plan does when the generator cannot make what the target needs.

    ``shrink`` aims at the best reachable mix (a smaller total in the target's shares);
    ``keep`` removes only unusable images and generates what it can. A plan never shrinks a set
    below ``min_total`` images (capped at ``target.total``): such an actor is left as it is.
    """

    when_short: str = "shrink"
    min_total: int = 10


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the local evaluator's defects."""

    min_side: int = 256
    blur_threshold: float = 9.0
    dark_threshold: float = 40.0
    bright_threshold: float = 215.0
    low_information_threshold: float = 8.0
    near_duplicate_distance: int = 10


@dataclass(frozen=True)
class StyleConfig:
    """The local style cascade: the learned stage decides where the statistics are unsure."""

    learned: bool = False  # opt-in: on photos of people it is less accurate than the statistics
    uncertain_low: float = 0.2
    uncertain_high: float = 0.8

    @property
    def band(self) -> tuple[float, float] | None:
        return (self.uncertain_low, self.uncertain_high) if self.learned else None


@dataclass(frozen=True)
class NsfwConfig:
    """The `nsfw` issue from open_nsfw's score, where that network runs."""

    threshold: float = 0.8
    unusable: bool = False
    every_image: bool = False  # run the network on every image, not only where style needs it


@dataclass(frozen=True)
class SubjectConfig:
    """Thresholds of the local evaluator's subject (face) checks; off for non-person datasets."""

    enabled: bool = True
    min_face_height: float = 0.10  # face_too_small: face box height / image height below this
    counted_face_ratio: float = 0.5  # a further face counts from this share of the main face
    face_blur_threshold: float = 25.0  # face_blurry: sharpness of the face below this
    identity_threshold: float = 0.6  # other_person: embedding distance above this
    stylized_identity_threshold: float = 0.8  # the same on a drawing (its embedding is rougher)
    min_face_share: float = 0.3  # share of the actor's photos with a face: else not a person


# Shares of 1 (above 0 like every number here): these may be 1; the uncertain band's ends not.
SHARES = (
    "subject.min_face_height",
    "subject.counted_face_ratio",
    "subject.min_face_share",
    "nsfw.threshold",
)
SHARES_BELOW_ONE = ("style.uncertain_low", "style.uncertain_high")


@dataclass(frozen=True)
class OpenAIConfig:
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4.1-mini"
    mode: str = "per_image"
    timeout: float = 60.0
    max_retries: int = 4
    concurrency: int = 4
    descriptions: dict[str, str] = field(default_factory=dict)

    def category_descriptions(self) -> dict[str, str]:
        """What the prompt says of each category: the built-in texts, then the user's."""
        return CATEGORY_DESCRIPTIONS | self.descriptions


@dataclass(frozen=True)
class EvaluatorConfig:
    """``escalate = "openai"``: the local backend sends the images whose style it is unsure of
    (photo probability within [unsure_min, unsure_max]) to the ``openai`` settings' model."""

    backend: str = "local"
    escalate: str = "none"
    unsure_min: float = 0.3
    unsure_max: float = 0.75
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)


@dataclass(frozen=True)
class ReplicateConfig:
    base_url: str = "https://api.replicate.com/v1"
    model: str = "black-forest-labs/flux-kontext-pro"
    timeout: float = 300.0


@dataclass(frozen=True)
class GeneratorConfig:
    backend: str = "local"
    replicate: ReplicateConfig = field(default_factory=ReplicateConfig)


@dataclass(frozen=True)
class DownloadConfig:
    """``timeout``: each wait for the server; ``deadline``: the whole of one image, all included."""

    timeout: float = 30.0
    retries: int = 3
    max_bytes: int = 52_428_800
    deadline: float = 60.0


@dataclass(frozen=True)
class LimitsConfig:
    """The largest file read from the dataset or the output folder (images, manifests, progress)."""

    max_file_mib: int = 64

    @property
    def max_file_bytes(self) -> int:
        return self.max_file_mib * 1024 * 1024


@dataclass(frozen=True)
class Config:
    target: TargetConfig = field(default_factory=TargetConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    style: StyleConfig = field(default_factory=StyleConfig)
    nsfw: NsfwConfig = field(default_factory=NsfwConfig)
    subject: SubjectConfig = field(default_factory=SubjectConfig)
    evaluator: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    prompts: dict[str, list[str]] = field(default_factory=lambda: dict(DEFAULT_PROMPTS))
    download: DownloadConfig = field(default_factory=DownloadConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)

    @property
    def categories(self) -> tuple[str, ...]:
        return self.target.categories

    def prompts_for(self, category: str) -> list[str]:
        return self.prompts.get(category) or [GENERIC_PROMPT.replace("{category}", category)]


CHOICES: dict[str, tuple[str, ...]] = {
    "evaluator.backend": ("local", "openai"),
    "evaluator.escalate": ("none", "openai"),
    "evaluator.openai.mode": ("per_image", "composite"),
    "generator.backend": ("local", "replicate", "none"),
    "plan.when_short": ("shrink", "keep"),
}


def load_config(path: Path | None) -> Config:
    """Read and validate a TOML config; ``None`` gives the built-in defaults."""
    if path is None:
        return Config()
    try:
        raw = tomllib.loads(read_regular_file(Path(path)).decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError, UnreadableFile) as error:
        raise ConfigError(f"cannot read config {path}: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config {path} is not valid TOML: {error}") from None
    except RecursionError:
        raise ConfigError(f"config {path} is not valid TOML: nested too deeply") from None
    return parse_config(raw)


def parse_config(raw: dict[str, Any]) -> Config:
    """Build a Config from already-parsed TOML, checking every key and value."""
    config = _build(Config, raw, prefix="")
    _check_mix(config.target)
    if "min_total" in raw.get("plan", {}):
        _check_min_total(config.plan, config.target)
    _check_categories(config)
    _check_prompts(config.prompts)
    _check_escalation(config.evaluator)
    _check_uncertain_band(config)
    return config


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"config key '{prefix.rstrip('.')}' must be a table")
    known = {f.name: f for f in fields(cls)}
    for key in raw:
        if key not in known:
            raise ConfigError(f"unknown config key '{prefix}{key}'")
    defaults = cls()
    values: dict[str, Any] = {}
    for name in known:
        key = f"{prefix}{name}"
        default = getattr(defaults, name)
        if name not in raw:
            values[name] = default
        elif is_dataclass(default):
            values[name] = _build(type(default), raw[name], prefix=f"{key}.")
        else:
            values[name] = _value(key, raw[name], default)
    return cls(**values)


def _value(key: str, value: Any, default: Any) -> Any:
    if key == "target.mix":
        return _mix(key, value)
    if key == "prompts":
        return _prompt_table(key, value)
    if key == "evaluator.openai.descriptions":
        return _descriptions(key, value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer")
        if value < (0 if key.endswith("retries") else 1):
            raise ConfigError(f"config key '{key}' is out of range: {value}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"config key '{key}' must be a number")
        if not math.isfinite(value) or value < 0 or (value == 0 and key != "target.tolerance"):
            raise ConfigError(f"config key '{key}' is out of range: {value}")
        if (key in SHARES and value > 1) or (key in SHARES_BELOW_ONE and value >= 1):
            limit = "below 1" if key in SHARES_BELOW_ONE else "at most 1"
            raise ConfigError(f"config key '{key}' is out of range: {value} (a share, {limit})")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"config key '{key}' must be a non-empty string")
        choices = CHOICES.get(key)
        if choices and value not in choices:
            raise ConfigError(f"config key '{key}' must be one of {', '.join(choices)}: {value!r}")
        return value
    raise ConfigError(f"config key '{key}' has an unsupported value")  # pragma: no cover


def _mix(key: str, value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"config key '{key}' must be a table of category = share")
    mix: dict[str, float] = {}
    for name, share in value.items():
        if not name.replace("_", "").isalnum():
            raise ConfigError(f"config key '{key}.{name}': category names are letters, digits, _")
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
            raise ConfigError(f"config key '{key}.{name}' must be a share in (0, 1]")
        mix[name] = float(share)
    return mix


def _prompt_table(key: str, value: Any) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        raise ConfigError(f"config key '{key}' must be a table of category = [templates]")
    prompts = dict(DEFAULT_PROMPTS)
    for name, templates in value.items():
        if (
            not isinstance(templates, list)
            or not templates
            or not all(isinstance(t, str) and t.strip() for t in templates)
        ):
            raise ConfigError(f"config key '{key}.{name}' must be a non-empty list of strings")
        prompts[name] = list(templates)
    return prompts


def _descriptions(key: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError(f"config key '{key}' must be a table of category = \"description\"")
    for name, text in value.items():
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"config key '{key}.{name}' must be a non-empty string")
    return dict(value)


def _check_mix(target: TargetConfig) -> None:
    if abs(sum(target.mix.values()) - 1.0) > 1e-6:
        raise ConfigError(
            f"config key 'target.mix': shares sum to {sum(target.mix.values()):g}, not 1"
        )
    if target.tolerance >= 1:
        raise ConfigError(f"config key 'target.tolerance' is out of range: {target.tolerance}")


def _check_min_total(plan: PlanConfig, target: TargetConfig) -> None:
    """Only a min_total the user set: the default 10 is capped at a smaller target.total."""
    if plan.min_total > target.total:
        raise ConfigError(
            f"config key 'plan.min_total' ({plan.min_total}) is above target.total "
            f"({target.total}): every short actor would be left as it is"
        )


def _check_categories(config: Config) -> None:
    """Every category of the mix must be one the configured evaluator can assign.

    Otherwise a typo (``bw_stylised``) plans the removal of every image of the real category.
    """
    if config.evaluator.backend == "openai":
        known = tuple(config.evaluator.openai.category_descriptions())
    else:
        known = LOCAL_CATEGORIES
    for name in config.target.mix:
        if name in known:
            continue
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        if config.evaluator.backend == "openai":
            raise ConfigError(
                f"config key 'target.mix.{name}': {hint}the openai evaluator needs a description "
                f"of a custom category: add it under [evaluator.openai.descriptions] as "
                f'{name} = "what such an image looks like"'
            )
        raise ConfigError(
            f"config key 'target.mix.{name}': {hint}the local evaluator assigns only "
            f"{', '.join(LOCAL_CATEGORIES)}"
        )


def _check_escalation(evaluator: EvaluatorConfig) -> None:
    if not 0 < evaluator.unsure_min < evaluator.unsure_max < 1:
        raise ConfigError(
            "config keys 'evaluator.unsure_min' and 'evaluator.unsure_max' must satisfy "
            f"0 < unsure_min < unsure_max < 1: {evaluator.unsure_min}, {evaluator.unsure_max}"
        )
    if evaluator.escalate != "none" and evaluator.backend != "local":
        raise ConfigError(
            "config key 'evaluator.escalate' applies to the local backend only "
            f"(backend is {evaluator.backend!r}, which judges every image already)"
        )


def _check_uncertain_band(config: Config) -> None:
    """The uncertain band is not upside down (each end is a share, checked as it is read)."""
    if config.style.uncertain_low > config.style.uncertain_high:
        raise ConfigError(
            "config key 'style.uncertain_low' must not be above 'style.uncertain_high': "
            f"{config.style.uncertain_low} > {config.style.uncertain_high}"
        )


def _check_prompts(prompts: dict[str, list[str]]) -> None:
    for name, templates in prompts.items():
        for template in templates:
            try:
                template.format(descriptor="x", category=name)
            except (KeyError, IndexError, ValueError):
                raise ConfigError(
                    f"config key 'prompts.{name}': bad template {template!r} "
                    "(use {descriptor} for the actor)"
                ) from None


def result_settings(config: Config) -> dict[str, Any]:
    """The settings that change results, recorded in progress.json and compared on resume.

    Timeouts, retries and concurrency change how, not what, so they are left out.
    """
    evaluator: dict[str, Any] = {"backend": config.evaluator.backend}
    if config.evaluator.backend == "openai":
        evaluator |= {
            "base_url": config.evaluator.openai.base_url,
            "model": config.evaluator.openai.model,
            "mode": config.evaluator.openai.mode,
        }
        if config.evaluator.openai.descriptions:
            evaluator["descriptions"] = dict(config.evaluator.openai.descriptions)
    else:
        evaluator["quality"] = asdict(config.quality)
        evaluator["style"] = asdict(config.style)
        evaluator["nsfw"] = asdict(config.nsfw)
        evaluator["subject"] = asdict(config.subject)
    if config.evaluator.escalate == "openai":
        evaluator["escalate"] = {
            "base_url": config.evaluator.openai.base_url,
            "model": config.evaluator.openai.model,
            "mode": config.evaluator.openai.mode,
            "unsure": [config.evaluator.unsure_min, config.evaluator.unsure_max],
        }
    generator: dict[str, Any] = {"backend": config.generator.backend}
    if config.generator.backend == "replicate":
        generator["model"] = config.generator.replicate.model
    return {
        "targets": {"total": config.target.total, "tolerance": config.target.tolerance},
        "categories": dict(config.target.mix),
        "plan": asdict(config.plan),
        "evaluator": evaluator,
        "generator": generator,
    }
