"""deploy/: the KServe manifest and the server image, checked as far as this machine allows
(no cluster, no container engine): schemas, and agreement with the server they run."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from model_agnostic.cli import _parser
from model_agnostic.serving.dataplane import Request
from model_agnostic.serving.server import build_dataplane
from tests.conftest import ROOT
from tests.serving_fixtures import write_tiny_model

DEPLOY = ROOT / "deploy"


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "kserve-inferenceservice.yaml").read_text()))


@pytest.fixture(scope="module")
def container(manifest: dict[str, Any]) -> dict[str, Any]:
    return dict(manifest["spec"]["predictor"]["containers"][0])


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_manifest_validates_against_the_kubernetes_schema_and_kserve_fields() -> None:
    spec = importlib.util.spec_from_file_location("validate_manifest",
                                                  DEPLOY / "validate_manifest.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main() == 0


def test_manifest_validation_catches_a_misspelt_pod_field() -> None:
    spec = importlib.util.spec_from_file_location("validate_manifest",
                                                  DEPLOY / "validate_manifest.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    errors = module.validate_pod({"containers": [{"name": "c", "image": "i",
                                                  "readinessProbe": {"httpGett": {}}}]})
    assert errors and "httpGett" in errors[0]


def test_manifest_runs_the_serve_command_on_its_port_with_probes_on_v2_health(
        container: dict[str, Any]) -> None:
    assert container["name"] == "kserve-container"
    assert container["command"] == ["model-agnostic"]
    args = _parser().parse_args(container["args"])
    assert args.run.__name__ == "_serve" and args.target == "/mnt/models"
    assert args.host == "0.0.0.0"
    ports = {p["containerPort"] for p in container["ports"]}
    assert ports == {args.port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready",
                                                       "port": args.port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live",
                                                      "port": args.port}
    resources = container["resources"]
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"]  # Guaranteed CPU


def test_readiness_probe_fails_until_the_repository_is_loaded_liveness_does_not(
        tmp_path: Path, container: dict[str, Any]) -> None:
    write_tiny_model(tmp_path / "models" / "tiny" / "1")
    dataplane = build_dataplane(tmp_path / "models")
    ready, live = (container[probe]["httpGet"]["path"]
                   for probe in ("readinessProbe", "livenessProbe"))
    try:
        assert dataplane.handle(Request("GET", ready)).status == 503
        assert dataplane.handle(Request("GET", live)).status == 200
        dataplane.repository.start()
        assert dataplane.handle(Request("GET", ready)).status == 200
        assert dataplane.handle(Request("GET", live)).status == 200
    finally:
        dataplane.repository.stop()


def test_image_installs_the_torch_free_server_and_runs_what_the_manifest_runs(
        container: dict[str, Any]) -> None:
    instructions = dockerfile_instructions()
    runs = " ".join(arguments for name, arguments in instructions if name == "RUN")
    assert '"$(ls /wheels/model_agnostic-*.whl)[serve]"' in runs and "torch]" not in runs
    assert "--find-links" not in runs  # never resolve "model-agnostic" on the public index
    assert "find_spec('torch') is not None" in runs  # the build fails if torch got in
    cmd = json.loads(next(arguments for name, arguments in instructions if name == "CMD"))
    served = cmd[:2] + ["/mnt/models"] + cmd[3:]  # the manifest mounts models elsewhere
    assert served == container["command"] + container["args"]
    exposed = next(arguments for name, arguments in instructions if name == "EXPOSE")
    assert exposed == str(container["ports"][0]["containerPort"])
    user = next(arguments for name, arguments in instructions if name == "USER")
    assert user == str(container["securityContext"]["runAsUser"])


def test_image_copies_every_source_the_wheel_needs() -> None:
    sources = {source for name, arguments in dockerfile_instructions()
               if name == "COPY" and not arguments.startswith("--from")
               for source in shlex.split(arguments)[:-1]}
    for needed in ("setup.cfg", "pyproject.toml", "README.md", "model_agnostic", "adapters"):
        assert needed in sources, needed
        assert (ROOT / needed).exists(), needed
    ignore = [line.strip() for line in (DEPLOY / "Dockerfile.dockerignore").read_text()
              .splitlines() if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*" and {"!model_agnostic/", "!adapters/"} <= set(ignore)


def test_deploy_time_settings_in_the_manifest_and_image_are_valid_overrides(
        container: dict[str, Any], tmp_path: Path) -> None:
    from model_agnostic.artifact import CACHE_ENV
    from model_agnostic.config import apply_overrides, load_config, overrides_from_env

    env = {item["name"]: item["value"] for item in container["env"]}
    overrides = overrides_from_env(env)
    assert overrides == {"onnxruntime": {"intra_op_num_threads": 2}}
    config = tmp_path / "config.toml"
    config.write_text('[model]\nclass = "m.py:M"\n')
    applied = apply_overrides(load_config(config), ("the manifest", overrides))
    assert applied.sections["onnxruntime"] == {"intra_op_num_threads": 2}
    cache = env[CACHE_ENV]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert any(cache.startswith(mount + "/") for mount in mounts)  # writable
    image_env = " ".join(arguments for name, arguments in dockerfile_instructions() if name == "ENV")
    assert f"{CACHE_ENV}=/tmp/model_agnostic" in image_env
