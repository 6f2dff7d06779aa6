"""spark-submit entry point: `spark-submit jobs/export.py [--config realsyn.yaml] [--set section.key=value ...] [--scale 15M ...]`."""
import sys

from realsyn_spark.cli import main

if __name__ == "__main__":
    sys.exit(main([*sys.argv[1:], "export"]))
