"""Check deploy/kserve-inferenceservice.yaml as far as this machine allows (no cluster).

1. The KServe part, by hand: apiVersion/kind, and every key of ``spec.predictor`` is a
   field of KServe's v1beta1 PredictorSpec (its ComponentExtensionSpec + the inlined
   PodSpec) as listed below from the InferenceService CRD.
2. The Kubernetes part, against the real schema: the predictor's pod fields (containers
   with ports, probes, resources, securityContext; volumes) wrapped in a core/v1 Pod and
   validated strictly (unknown fields are errors) with ``kubernetes-validate``.

Usage: pip install kubernetes-validate pyyaml; python deploy/validate_manifest.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

MANIFEST = Path(__file__).with_name("kserve-inferenceservice.yaml")
# serving.kserve.io/v1beta1 ComponentExtensionSpec fields, then the PodSpec fields used here
KSERVE_FIELDS = {"minReplicas", "maxReplicas", "scaleTarget", "scaleMetric",
                 "containerConcurrency", "timeout", "canaryTrafficPercent", "logger",
                 "batcher", "labels", "annotations", "deploymentStrategy"}
POD_FIELDS = {"containers", "volumes", "serviceAccountName", "nodeSelector", "tolerations",
              "affinity", "securityContext", "imagePullSecrets"}
SCALE_METRICS = {"cpu", "memory", "concurrency", "rps"}


def main() -> int:
    document = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    errors = []
    if document.get("apiVersion") != "serving.kserve.io/v1beta1":
        errors.append("apiVersion must be serving.kserve.io/v1beta1")
    if document.get("kind") != "InferenceService":
        errors.append("kind must be InferenceService")
    predictor = document["spec"]["predictor"]
    unknown = set(predictor) - KSERVE_FIELDS - POD_FIELDS
    if unknown:
        errors.append(f"spec.predictor has fields KServe does not know: {sorted(unknown)}")
    if predictor.get("scaleMetric") not in SCALE_METRICS:
        errors.append(f"scaleMetric must be one of {sorted(SCALE_METRICS)}")
    if not 1 <= predictor.get("minReplicas", 1) <= predictor.get("maxReplicas", 1):
        errors.append("need 1 <= minReplicas <= maxReplicas")
    container = predictor["containers"][0]
    if container.get("name") != "kserve-container":
        errors.append("the predictor container must be named kserve-container")
    errors += validate_pod({key: predictor[key] for key in POD_FIELDS if key in predictor})
    for error in errors:
        print("error:", error)
    print("valid" if not errors else f"{len(errors)} error(s)")
    return 1 if errors else 0


def validate_pod(spec: dict[str, object]) -> list[str]:
    import kubernetes_validate

    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "chexnet"}, "spec": spec}
    version = kubernetes_validate.latest_version()
    try:
        kubernetes_validate.validate(pod, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = "/".join(map(str, exc.path))
        return [f"predictor pod spec (Kubernetes {version}, strict): {exc.message} at {where}"]
    print(f"predictor pod spec: valid against Kubernetes {version} core/v1 Pod (strict)")
    return []


if __name__ == "__main__":
    sys.exit(main())
