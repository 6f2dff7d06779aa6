"""The Databricks bundle and the EMR job definitions: valid against the published models, and in step with
the pipeline (every stage, in order, with settings the config accepts).

Validated offline: the bundle's job resources against `databricks-bundles` (Databricks' own generated
models of the Jobs API, which reject unknown fields and wrong types); the EMR requests against botocore's
service models (the shapes the AWS CLI checks `--cli-input-json` against). Not validated here: the bundle's
top-level sections beyond their names (the CLI's JSON schema is not available offline) and anything that
needs a workspace or an AWS account (runtimes, instance types, IAM).
"""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from realsyn_spark.config import load_config
from realsyn_spark.pipeline import STAGES

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "databricks.yml"
EMR = REPO / "deploy" / "emr"
# Stages that load a model and belong on GPU compute.
GPU_STAGES = {"embed", "caption", "tagvocab", "generate"}
BUNDLE_SECTIONS = {"bundle", "variables", "artifacts", "resources", "targets", "include", "workspace", "sync",
                   "permissions", "presets", "run_as", "experimental", "python", "scripts", "git"}


def _bundle() -> dict:
    return yaml.safe_load(BUNDLE.read_text())


def _resolved(value, variables: dict, workspace_files: str):
    """The bundle with ${var.x} and ${workspace.file_path} replaced as the CLI would."""
    if isinstance(value, dict):
        return {k: _resolved(v, variables, workspace_files) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolved(v, variables, workspace_files) for v in value]
    if isinstance(value, str):
        def sub(match):
            ref = match.group(1)
            if ref.startswith("var."):
                assert ref[4:] in variables, f"undefined bundle variable {ref}"
                return str(variables[ref[4:]]["default"])
            return {"workspace.file_path": workspace_files, "bundle.target": "dev"}[ref]
        return re.sub(r"\$\{([^}]+)\}", sub, value)
    return value


def _setup_metadata() -> tuple[str, set[str]]:
    text = (REPO / "setup.py").read_text()
    name = re.search(r'name="([^"]+)"', text).group(1)
    scripts = set(re.findall(r'"(\w+)=realsyn_spark\.cli:main"', text))
    return name, scripts


def _job():
    from databricks.bundles.jobs import Job

    bundle = _bundle()
    spec = _resolved(bundle["resources"]["jobs"]["realsyn_pipeline"], bundle["variables"], str(REPO))
    return spec, Job.from_dict(spec)


def test_bundle_sections_and_job_validate_against_databricks_models():
    from databricks.bundles.jobs import Job

    assert set(_bundle()) <= BUNDLE_SECTIONS
    spec, job = _job()
    assert job.name.startswith("realsyn-pipeline")
    # The validator has teeth: a misspelt field is refused.
    broken = json.loads(json.dumps(spec))
    broken["tasks"][0]["python_wheel_task"]["parameterz"] = broken["tasks"][0]["python_wheel_task"].pop("parameters")
    with pytest.raises(ValueError, match="parameterz"):
        Job.from_dict(broken)


def test_bundle_runs_every_stage_in_pipeline_order_on_the_right_compute():
    spec, _ = _job()
    tasks = spec["tasks"]
    assert [t["task_key"] for t in tasks] == list(STAGES)
    for before, task in zip(tasks, tasks[1:]):
        assert task["depends_on"] == [{"task_key": before["task_key"]}]
    environments = {e["environment_key"] for e in spec["environments"]}
    clusters = {c["job_cluster_key"]: c["new_cluster"] for c in spec["job_clusters"]}
    for task in tasks:
        if task["task_key"] in GPU_STAGES:
            assert task["job_cluster_key"] in clusters and task["libraries"], task["task_key"]
            assert "gpu" in clusters[task["job_cluster_key"]]["spark_version"]
            # GPU compute needs dedicated (single-user) access mode.
            assert clusters[task["job_cluster_key"]]["data_security_mode"] in ("SINGLE_USER", "DATA_SECURITY_MODE_DEDICATED")
        else:
            assert task["environment_key"] in environments, task["task_key"]


def test_bundle_wheel_tasks_call_the_cli_with_settings_the_config_accepts():
    from realsyn_spark.cli import _parser

    name, scripts = _setup_metadata()
    spec, _ = _job()
    for task in spec["tasks"]:
        wheel = task["python_wheel_task"]
        assert wheel["package_name"] == name and wheel["entry_point"] in scripts
        args = _parser().parse_args(wheel["parameters"])
        assert args.command == task["task_key"]
        assert Path(args.config).is_file(), args.config   # synced with the bundle's files
        cfg = load_config(args.config, args.overrides)
        assert cfg.lake.catalog_schema == _bundle()["variables"]["catalog_schema"]["default"]


def _validate_aws(service: str, operation: str, params: dict) -> None:
    import botocore.session
    from botocore.validate import ParamValidator

    shape = botocore.session.get_session().get_service_model(service).operation_model(operation).input_shape
    # The CLI fills idempotency tokens (EMR Serverless' clientToken) itself, as botocore does.
    tokens = {name: "token" for name, member in shape.members.items() if member.metadata.get("idempotencyToken")}
    report = ParamValidator().validate({**tokens, **params}, shape)
    assert not report.has_errors(), report.generate_report()


def test_emr_serverless_job_run_validates_and_runs_the_pipeline():
    params = json.loads((EMR / "serverless-start-job-run.json").read_text())
    _validate_aws("emr-serverless", "StartJobRun", params)
    with pytest.raises(AssertionError):   # the validator has teeth
        _validate_aws("emr-serverless", "StartJobRun", {**params, "jobDriverz": {}})
    driver = params["jobDriver"]["sparkSubmit"]
    assert driver["entryPoint"].endswith("/run_all.py")
    submit = shlex.split(driver["sparkSubmitParameters"])
    confs = dict(submit[i + 1].split("=", 1) for i, a in enumerate(submit) if a == "--conf")
    assert confs["spark.executorEnv.PYSPARK_PYTHON"] == "./environment/bin/python"
    assert confs["spark.archives"].endswith("#environment")
    assert confs["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    _assert_emr_arguments(driver["entryPointArguments"])


def test_emr_on_ec2_step_validates_and_runs_the_pipeline():
    params = json.loads((EMR / "ec2-add-steps.json").read_text())
    _validate_aws("emr", "AddJobFlowSteps", params)
    args = params["Steps"][0]["HadoopJarStep"]["Args"]
    assert args[0] == "spark-submit"
    script = next(i for i, a in enumerate(args) if a.endswith("/run_all.py"))
    _assert_emr_arguments(args[script + 1:])


def _assert_emr_arguments(arguments: list[str]) -> None:
    from realsyn_spark.cli import _parser

    # jobs/run_all.py appends the `run` command; `--config realsyn.yaml` is the file shipped with --files.
    args = _parser().parse_args([*arguments, "run"])
    assert Path(args.config).name == "realsyn.yaml"
    cfg = load_config(EMR / "realsyn.yaml", args.overrides)
    assert cfg.lake.root.startswith("s3://")
