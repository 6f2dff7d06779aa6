#!/usr/bin/env bash
# Build (once) the petastorm trainer environment and read a Parquet export with it:
#   scripts/petastorm_env.sh <export>/parquet [--expect N]
# The environment lives in ${PETASTORM_ENV:-${REALSYN_CACHE:-~/.cache/realsyn}/petastorm-env}, built with
# ${PYTHON:-python3.11} from deploy/trainer/petastorm-requirements.txt (pyarrow 14, numpy < 2) plus
# petastorm 0.13.1 without its pyspark requirement. It never shares packages with the ETL's environment.
# Exit status 3: the environment could not be built (packages not installable here, e.g. offline).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
env_dir="${PETASTORM_ENV:-${REALSYN_CACHE:-$HOME/.cache/realsyn}/petastorm-env}"
stamp="$env_dir/.requirements.sha256"
want="$(cat "$here/deploy/trainer/petastorm-requirements.txt" "$here/deploy/trainer/petastorm-no-deps.txt" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  rm -rf "$env_dir"
  if ! { "${PYTHON:-python3.11}" -m venv "$env_dir" \
         && "$env_dir/bin/pip" install -q -r "$here/deploy/trainer/petastorm-requirements.txt" \
         && "$env_dir/bin/pip" install -q --no-deps -r "$here/deploy/trainer/petastorm-no-deps.txt"; } >&2; then
    echo "petastorm_env: could not build $env_dir (packages not installable here)" >&2
    exit 3
  fi
  echo "$want" > "$stamp"
fi
exec "$env_dir/bin/python" "$here/scripts/petastorm_read.py" "$@"
