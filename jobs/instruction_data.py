"""spark-submit entry point: `spark-submit jobs/instruction_data.py [--config realsyn.yaml] [--set section.key=value ...]`."""
import sys

from realsyn_spark.cli import main

if __name__ == "__main__":
    sys.exit(main([*sys.argv[1:], "instruction-data"]))
