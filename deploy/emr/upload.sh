#!/usr/bin/env bash
# Build the executor environment and upload everything the EMR job definitions name.
#   deploy/emr/upload.sh s3://my-bucket/realsyn
set -euo pipefail
dest=${1:?usage: deploy/emr/upload.sh s3://BUCKET/PREFIX}
cd "$(dirname "$0")/../.."
docker build --platform linux/amd64 -f deploy/emr/Dockerfile --output deploy/emr/out .
aws s3 cp deploy/emr/out/realsyn_env.tar.gz "$dest/artifacts/realsyn_env.tar.gz"
aws s3 cp jobs/run_all.py "$dest/artifacts/run_all.py"
aws s3 cp deploy/emr/realsyn.yaml "$dest/artifacts/realsyn.yaml"
echo "now replace REPLACE-BUCKET/realsyn with ${dest#s3://} in deploy/emr/*.json and submit:"
echo "  aws emr-serverless start-job-run --cli-input-json file://deploy/emr/serverless-start-job-run.json"
echo "  aws emr add-steps --cli-input-json file://deploy/emr/ec2-add-steps.json"
