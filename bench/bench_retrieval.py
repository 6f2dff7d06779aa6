"""Hierarchical retrieval (realsyn_spark.stages.retrieve.hierarchical_search) vs exact search.

    python bench/bench_retrieval.py                       # 2M sentences, 200k images, d=512, sizes 0.5M/1M/2M
    python bench/bench_retrieval.py --sentences 400000 --images 40000 --scaling 100000,200000 --sample 2000

What it does (every figure is measured in the same run, on the same machine):

1. Synthetic clustered embeddings, generated inside Spark partitions (mapInArrow over block indices,
   a seed per block) and written to Parquet once under --work-dir (reused when the parameters match):
   a topic hierarchy on the unit sphere (256 super-topics -> 8192 topics, Zipf-distributed topic
   sizes), anisotropic noise (power-law spectrum, i.e. a low effective dimension as real embeddings
   have), and a modality offset between sentences and images, which are noisier than sentences.
   The first N rows of the sentence file are the corpus of size N (same distribution, fewer draws).
2. Spark (local[2] by default): for every corpus size, the whole retrieval is timed from the Parquet
   files to the written result: k-means sample, FAISS training, chunk plan, sentence assignment,
   image probes, per-(cluster, chunk) exact search, merge. For the largest size it is also run at
   n_probe=1 (the paper's setting).
3. A fresh single process on the same cores: exact top-3 of a random sample of --sample images against
   every sentence, with FAISS (faiss.knn: the kernel of IndexFlatIP.search, without copying the
   corpus into an index) and with a chunked numpy matmul + top-k; the faster is the baseline and is
   scaled linearly to all images. The same pass yields the exact top-3 for every corpus size.
4. Recall@3 of Spark's results on the sample vs the exact top-3, and the recall curve over n_probe
   computed from the same centroids (which sentence lands in which cluster, which clusters an image
   probes), distance computations per image, and the scaling of wall time with corpus size.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

BLOCK = 4096          # rows generated per seeded block
N_SUPER, N_TOPICS = 256, 8192


def tree_cpu_seconds(root: int | None = None) -> float:
    """CPU seconds (user + system) of a process and all its live descendants, including the children
    they reaped: here the Spark driver, its JVM and the JVM's Python workers. On a shared machine wall
    time depends on the load; CPU time much less."""
    root = os.getpid() if root is None else root
    tick = os.sysconf("SC_CLK_TCK")
    parent, spent = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        parent[int(entry)] = int(fields[1])
        spent[int(entry)] = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += spent.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total / tick


# ----------------------------------------------------------------------------------- synthetic data

def topic_model(seed: int, dim: int):
    """Topic means (hierarchical), topic weights (Zipf 0.8), noise spectrum and modality directions."""
    rng = np.random.default_rng([seed, 0])
    sup = rng.standard_normal((N_SUPER, dim)).astype(np.float32)
    sup /= np.linalg.norm(sup, axis=1, keepdims=True)
    means = sup[rng.integers(0, N_SUPER, N_TOPICS)] + rng.standard_normal((N_TOPICS, dim)).astype(np.float32) / np.sqrt(dim)
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    weights = 1.0 / np.arange(1, N_TOPICS + 1) ** 0.8
    rng.shuffle(weights)
    weights /= weights.sum()
    spectrum = (np.arange(1, dim + 1) ** -0.5).astype(np.float32)
    spectrum = (spectrum * np.sqrt(dim) / np.linalg.norm(spectrum))[rng.permutation(dim)]
    modality = rng.standard_normal((2, dim)).astype(np.float32)
    modality /= np.linalg.norm(modality, axis=1, keepdims=True)
    return means, weights, spectrum, modality


_TOPIC_MODELS: dict = {}   # one topic model per (seed, dim), kept between blocks


def generate_block(seed: int, dim: int, kind: int, block: int, rows: int, spread: float) -> np.ndarray:
    """`rows` unit vectors of block `block`; kind 0 = sentences, 1 = images (noisier, other modality)."""
    _cache = _TOPIC_MODELS
    key = (seed, dim)
    if key not in _cache:
        _cache.clear()
        _cache[key] = topic_model(seed, dim)
    means, weights, spectrum, modality = _cache[key]
    rng = np.random.default_rng([seed, 1 + kind, block])
    topic = rng.choice(len(means), rows, p=weights)
    noise = (1.0 if kind == 0 else 1.5) * spread
    x = means[topic] + noise * rng.standard_normal((rows, dim), dtype=np.float32) * (spectrum / np.sqrt(dim)) \
        + 0.5 * modality[kind]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def generator(seed: int, dim: int, kind: int, total: int, spread: float, storage_dtype: str):
    prefix = "s" if kind == 0 else "i"

    def run(batches):
        import pyarrow as pa

        for batch in batches:
            for block in batch.column(0).to_numpy():
                lo = int(block) * BLOCK
                rows = min(BLOCK, total - lo)
                x = generate_block(seed, dim, kind, int(block), rows, spread)
                if storage_dtype == "float16":
                    x = x.astype(np.float16).astype(np.float32)
                index = np.arange(lo, lo + rows, dtype=np.int64)
                offsets = pa.array(np.arange(0, (rows + 1) * dim, dim, dtype=np.int32))
                yield pa.RecordBatch.from_arrays(
                    [pa.array(index), pa.array([f"{prefix}{i:012d}" for i in index]),
                     pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1)))],
                    names=["row", f"{'sentence' if kind == 0 else 'image'}_id", "embedding"])
    return run


def write_dataset(spark, path: str, seed: int, dim: int, kind: int, total: int, spread: float, storage_dtype: str):
    meta = {"seed": seed, "dim": dim, "kind": kind, "rows": total, "spread": spread, "dtype": storage_dtype,
            "topics": N_TOPICS, "version": 1}
    meta_path = Path(path + ".json")
    if meta_path.exists() and json.loads(meta_path.read_text()) == meta:
        return False
    blocks = math.ceil(total / BLOCK)
    id_col = "sentence_id" if kind == 0 else "image_id"
    (spark.range(blocks, numPartitions=max(2, blocks // 25))
     .mapInArrow(generator(seed, dim, kind, total, spread, storage_dtype),
                 f"row long, {id_col} string, embedding array<float>")
     .write.mode("overwrite").parquet(path))
    meta_path.write_text(json.dumps(meta))
    return True


# --------------------------------------------------------------------------------------- Spark phase

def spark_phase(args) -> dict:
    from pyspark.sql import functions as F

    from realsyn_spark.clustering import chunk_plan, kmeans_sample_size, retrieval_clusters, sample_vectors, train_kmeans
    from realsyn_spark.config import RetrievalConfig, load_config
    from realsyn_spark.session import local_session_builder
    from realsyn_spark.sparkutil import input_partitions
    from realsyn_spark.stages.retrieve import search_with_stats

    cfg = load_config(overrides=[f"spark.shuffle_partitions={args.partitions}"])
    spark = (local_session_builder(cfg, master=args.master)
             .config("spark.driver.memory", args.driver_memory)
             .config("spark.sql.warehouse.dir", os.path.join(args.work_dir, "warehouse"))
             .config("spark.local.dir", os.path.join(args.work_dir, "spark-tmp"))
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    work = Path(args.work_dir)
    t = time.time()
    made = [write_dataset(spark, str(work / "sentences.parquet"), args.seed, args.dim, 0, args.sentences,
                          args.spread, args.storage_dtype),
            write_dataset(spark, str(work / "images.parquet"), args.seed, args.dim, 1, args.images,
                          args.spread, args.storage_dtype)]
    print(f"data: {'generated' if any(made) else 'reused'} {args.sentences:,} sentences + {args.images:,} images "
          f"(d={args.dim}, seed={args.seed}) in {time.time() - t:.0f} s under {work}", flush=True)

    defaults = RetrievalConfig()
    n_probe = args.n_probe or defaults.n_probe
    runs = [(n, n_probe) for n in args.sizes]
    if not args.skip_probe1 and n_probe != 1:
        runs.append((args.sentences, 1))
    out = {"runs": [], "default_n_probe": defaults.n_probe, "n_probe": n_probe}
    for n, probes in runs:
        rcfg = RetrievalConfig(n_probe=probes, top_k=3,
                               **({"max_vectors_per_task": args.max_vectors_per_task} if args.max_vectors_per_task else {}),
                               **({"kmeans_sample_size": args.kmeans_sample} if args.kmeans_sample else {}),
                               **({"kmeans_iterations": args.kmeans_iterations} if args.kmeans_iterations else {}))
        sentences = (spark.read.parquet(str(work / "sentences.parquet")).where(F.col("row") < n)
                     .select("sentence_id", "embedding"))
        images = spark.read.parquet(str(work / "images.parquet")).select("image_id", "embedding")
        result_path = str(work / f"result_{n}_p{probes}.parquet")
        cpu0 = tree_cpu_seconds()
        t0 = time.time()
        k = retrieval_clusters(n, rcfg.sentences_per_cluster, args.n_clusters or rcfg.n_clusters)
        sample = sample_vectors(sentences, n, kmeans_sample_size(rcfg.kmeans_sample_size, k), rcfg.seed, "sentence_id")
        t1 = time.time()
        centroids = train_kmeans(sample, k, rcfg.kmeans_iterations, rcfg.seed)
        chunks = chunk_plan(sample, centroids, n, rcfg.max_vectors_per_task,
                            input_tasks=input_partitions(sentences))
        t2 = time.time()
        result, stats, matches = search_with_stats(spark, images, sentences, centroids, rcfg, chunks=chunks)
        result.write.mode("overwrite").parquet(result_path)
        matches.unpersist()
        t3 = time.time()
        cpu = tree_cpu_seconds() - cpu0
        np.save(work / f"centroids_{n}_p{probes}.npy", centroids)
        run = {"n": n, "n_probe": probes, "k": k, "sample": int(len(sample)), "iterations": rcfg.kmeans_iterations,
               "max_vectors_per_task": rcfg.max_vectors_per_task, "clusters_split": int((chunks > 1).sum()),
               "chunks": int(chunks.sum()), "sample_s": t1 - t0, "train_s": t2 - t1, "search_s": t3 - t2,
               "total_s": t3 - t0, "cpu_s": cpu, **stats, "result": result_path, "load": os.getloadavg()[0]}
        out["runs"].append(run)
        print(f"spark n={n:,} n_probe={probes} k={k}: total {run['total_s']:.1f} s wall, {cpu:.0f} CPU s "
              f"(sample {run['sample_s']:.1f}, "
              f"k-means {run['train_s']:.1f}, assign+search+merge+write {run['search_s']:.1f}); "
              f"largest task {run['max_sentences']:,} sentences (limit {rcfg.max_vectors_per_task:,}), "
              f"{run['clusters_split']} clusters split (load average {run['load']:.1f})", flush=True)
    spark.stop()
    return out


# --------------------------------------------------------------------------------------- exact phase

def read_vectors(path: str, rows: np.ndarray | None, total: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Vectors ordered by `row` (all, or only `rows`), read batch by batch without a second full copy."""
    import pyarrow.parquet as pq

    from udfs.retrieval import arrow_vectors

    wanted = None if rows is None else np.sort(rows)
    out = np.empty((total if rows is None else len(wanted), dim), np.float32)
    ids = np.empty(len(out), dtype=object)
    for file in sorted(glob.glob(os.path.join(path, "*.parquet"))):
        for batch in pq.ParquetFile(file).iter_batches(batch_size=16384):
            row = batch.column(0).to_numpy()
            if wanted is None:
                sel, dest = np.arange(len(row)), row
            else:
                pos = np.searchsorted(wanted, row)
                hit = (pos < len(wanted)) & (wanted[np.minimum(pos, len(wanted) - 1)] == row)
                sel, dest = np.nonzero(hit)[0], pos[hit]
                if not len(sel):
                    continue
            vectors = arrow_vectors(batch.column(2).take(sel), dim)
            out[dest] = vectors
            ids[dest] = np.asarray(batch.column(1).take(sel).to_pylist(), dtype=object)
    return out, ids


def exact_phase(args) -> dict:
    import faiss

    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    except ImportError:  # numpy's BLAS then uses every core
        pass
    faiss.omp_set_num_threads(args.threads)
    work = Path(args.work_dir)
    rng = np.random.default_rng(args.seed + 7)
    sample_rows = np.sort(rng.choice(args.images, min(args.sample, args.images), replace=False))
    t = time.time()
    queries, qids = read_vectors(str(work / "images.parquet"), sample_rows, 0, args.dim)
    corpus, _ = read_vectors(str(work / "sentences.parquet"), None, args.sentences, args.dim)
    load_s = time.time() - t

    # numpy: chunked matmul + top-3, in row order, snapshotting the running top-3 at every corpus size
    sizes = sorted(args.sizes)
    best_s = np.full((len(queries), 3), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 3), np.int64)
    truth = {}
    cuts = sorted(set(list(range(0, args.sentences, args.chunk)) + sizes + [args.sentences]))
    t, c = time.time(), time.process_time()
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        scores = queries @ corpus[lo:hi].T
        part = np.argpartition(-scores, 2, axis=1)[:, :3]
        cand_s = np.concatenate([best_s, np.take_along_axis(scores, part, axis=1)], axis=1)
        cand_i = np.concatenate([best_i, part + lo], axis=1)
        order = np.argsort(-cand_s, axis=1, kind="stable")[:, :3]
        best_s, best_i = np.take_along_axis(cand_s, order, axis=1), np.take_along_axis(cand_i, order, axis=1)
        if hi in sizes:
            truth[hi] = (best_s.copy(), best_i.copy())
    numpy_s, numpy_cpu = time.time() - t, time.process_time() - c

    t, c = time.time(), time.process_time()
    faiss_scores, faiss_index = faiss.knn(queries, corpus, 3, metric=faiss.METRIC_INNER_PRODUCT)
    faiss_s, faiss_cpu = time.time() - t, time.process_time() - c
    agree = float(np.mean(np.sort(faiss_index, axis=1) == np.sort(best_i, axis=1)))

    stats = {"load_s": load_s, "numpy_s": numpy_s, "faiss_s": faiss_s, "sample": len(queries),
             "numpy_cpu": numpy_cpu, "faiss_cpu": faiss_cpu,
             "load": os.getloadavg()[0],
             "faiss_numpy_agreement": agree, "top1_cos": float(best_s[:, 0].mean()),
             "top3_cos": float(best_s[:, 2].mean()),
             "random_pair_cos": float((queries[:500] @ corpus[:2000].T).mean()), "sizes": {}}

    spark = json.loads((work / "spark.json").read_text())
    import pyarrow.parquet as pq

    qpos = {q: i for i, q in enumerate(qids)}
    for run in spark["runs"]:
        n = run["n"]
        t_s, t_i = truth[n]
        centroids = np.load(work / f"centroids_{n}_p{run['n_probe']}.npy")
        # recall curve over n_probe from the same centroids: a true neighbour is found with p probes
        # when its cluster is among the image's p nearest centroids
        _, home = faiss.knn(corpus[t_i.reshape(-1)], centroids, 1, metric=faiss.METRIC_INNER_PRODUCT)
        order = np.argsort(-(queries @ centroids.T), axis=1)
        rank_of = np.argsort(order, axis=1)
        truth_rank = np.take_along_axis(rank_of, home.reshape(len(queries), 3), axis=1)
        curve = {p: float(np.mean(truth_rank < p)) for p in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32) if p <= len(centroids)}
        # recall of what Spark actually returned for the sampled images
        table = pq.read_table(run["result"], columns=["image_id", "sentence_id"])
        img = table.column("image_id").to_pylist()
        sid = table.column("sentence_id").to_pylist()
        found = [set() for _ in range(len(queries))]
        for i, s in zip(img, sid):
            j = qpos.get(i)
            if j is not None:
                found[j].add(int(s[1:]))
        hits = sum(len(found[j] & set(t_i[j].tolist())) for j in range(len(queries)))
        stats["sizes"].setdefault(str(n), {})[str(run["n_probe"])] = {
            "recall_spark": hits / t_i.size, "curve": curve}
    return stats


# ------------------------------------------------------------------------------------------- report

def report(args, spark: dict, exact: dict) -> None:
    base_name = "faiss" if exact["faiss_s"] <= exact["numpy_s"] else "numpy"
    base_sample_s = min(exact["faiss_s"], exact["numpy_s"])
    base_sample_cpu = exact[f"{base_name}_cpu"]
    print()
    print(f"exact search in one process ({args.threads} threads), {exact['sample']:,} sampled images x "
          f"{args.sentences:,} sentences: faiss.knn {exact['faiss_s']:.1f} s wall / {exact['faiss_cpu']:.0f} CPU s, "
          f"numpy chunked matmul+top-k {exact['numpy_s']:.1f} s / {exact['numpy_cpu']:.0f} CPU s "
          f"(same neighbours: {exact['faiss_numpy_agreement']:.4f}); baseline = the faster, {base_name}; "
          f"loading the corpus took {exact['load_s']:.1f} s (not counted); load average {exact['load']:.1f}")
    print(f"data: mean cosine image->top1 {exact['top1_cos']:.3f}, ->top3 {exact['top3_cos']:.3f}, "
          f"random image-sentence {exact['random_pair_cos']:.3f}")
    print()
    print("Exact = the baseline's time on the sample x (images / sample) x (n / largest n). Speed-up = exact / Spark,")
    print("in wall time and in CPU time (the machine is shared: CPU time is the steadier figure).")
    print("| sentences | n_probe | clusters | Spark wall s | Spark CPU s | exact wall s | exact CPU s | speed-up wall | "
          "speed-up CPU | recall@3 | dots/image (probe+fine) | incl. assignment+k-means | brute force | saving |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run in spark["runs"]:
        n, p = run["n"], run["n_probe"]
        scale = args.images / exact["sample"] * n / args.sentences
        exact_wall, exact_cpu = base_sample_s * scale, base_sample_cpu * scale
        rec = exact["sizes"][str(n)][str(p)]["recall_spark"]
        fine = run["pairs"] / args.images + run["k"]
        amortised = fine + (n * run["k"] + run["sample"] * run["k"] * run["iterations"]) / args.images
        print(f"| {n:,} | {p} | {run['k']:,} | {run['total_s']:.0f} | {run['cpu_s']:.0f} | {exact_wall:.0f} | "
              f"{exact_cpu:.0f} | {exact_wall / run['total_s']:.1f}x | {exact_cpu / run['cpu_s']:.1f}x | {rec:.4f} | "
              f"{fine:,.0f} | {amortised:,.0f} | {n:,} | {n / fine:.0f}x ({n / amortised:.0f}x amortised) |")
    print()
    print("recall@3 vs n_probe (from the centroids of each run, same sampled images):")
    for run in spark["runs"]:
        curve = exact["sizes"][str(run["n"])][str(run["n_probe"])]["curve"]
        print(f"  n={run['n']:,} k={run['k']:,}: " + ", ".join(f"p={p}: {v:.4f}" for p, v in curve.items()))
    main_runs = [r for r in spark["runs"] if r["n_probe"] == spark["n_probe"]]
    if len(main_runs) > 1:
        print()
        a = main_runs[0]
        for b in main_runs[1:]:
            size = b["n"] / a["n"]
            print(f"scaling {a['n']:,} -> {b['n']:,} sentences ({size:.0f}x; linear x{size:.0f}, quadratic "
                  f"x{size * size:.0f}): wall x{b['total_s'] / a['total_s']:.2f} (exponent "
                  f"{math.log(b['total_s'] / a['total_s']) / math.log(size):.2f}), CPU x{b['cpu_s'] / a['cpu_s']:.2f} "
                  f"(exponent {math.log(b['cpu_s'] / a['cpu_s']) / math.log(size):.2f})")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sentences", type=int, default=2_000_000)
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--scaling", default="500000,1000000", help="smaller corpus sizes, comma separated")
    parser.add_argument("--sample", type=int, default=5000, help="images searched exactly")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spread", type=float, default=1.0, help="noise multiplier (harder data above 1)")
    parser.add_argument("--storage-dtype", choices=["float32", "float16"], default="float32")
    parser.add_argument("--n-probe", type=int, default=None, help="default: the configured default")
    parser.add_argument("--n-clusters", type=int, default=None)
    parser.add_argument("--max-vectors-per-task", type=int, default=None)
    parser.add_argument("--kmeans-sample", type=int, default=None)
    parser.add_argument("--kmeans-iterations", type=int, default=None)
    parser.add_argument("--skip-probe1", action="store_true")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--threads", type=int, default=2, help="threads of the exact single-process search")
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--driver-memory", default="6g")
    parser.add_argument("--chunk", type=int, default=16384, help="corpus rows per numpy matmul block")
    parser.add_argument("--work-dir", default="/tmp/realsyn-bench-retrieval")
    parser.add_argument("--phase", choices=["all", "spark", "exact"], default="all")
    args = parser.parse_args(argv)
    args.sizes = sorted({int(s) for s in args.scaling.split(",") if s.strip()} | {args.sentences})
    args.sizes = [s for s in args.sizes if s <= args.sentences]
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    if args.phase == "spark":
        (work / "spark.json").write_text(json.dumps(spark_phase(args)))
        return
    if args.phase == "exact":
        (work / "exact.json").write_text(json.dumps(exact_phase(args)))
        return
    # each phase in a fresh process, so the Spark JVM's heap and the 4 GB exact corpus never coexist
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:])]
    for phase in ("spark", "exact"):
        # passive OpenMP waits: spinning threads would add CPU time to the baseline on a busy machine
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"} if phase == "exact" else None
        subprocess.run([sys.executable, __file__, *passthrough, "--phase", phase], check=True, env=env)
    report(args, json.loads((work / "spark.json").read_text()), json.loads((work / "exact.json").read_text()))


if __name__ == "__main__":
    main()
