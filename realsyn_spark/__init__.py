"""realsyn-spark: a Spark + Delta pipeline that builds RealSyn-style CLIP pre-training data."""
__version__ = "0.1.0"
