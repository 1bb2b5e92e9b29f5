"""Flask and Django adapters, each mounted inside a host app beside the host's own routes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_agnostic.serving.server import build_dataplane
from tests.serving_fixtures import expected_logits, png_bytes, write_tiny_model

IMAGE = np.random.default_rng(3).random((1, 3, 8, 8), dtype=np.float32)
INFER = json.dumps({"inputs": [{"name": "image", "shape": [1, 3, 8, 8], "datatype": "FP32",
                                "data": IMAGE.ravel().tolist()}]})


@pytest.fixture(scope="module")
def dataplane(tmp_path_factory: pytest.TempPathFactory) -> Any:
    config = write_tiny_model(tmp_path_factory.mktemp("tiny"), serving='name = "tiny"')
    plane = build_dataplane(config)
    yield plane
    plane.repository.stop()


def check_answers(get: Any, post: Any) -> None:
    """The same checks through either framework's test client (paths under /ml)."""
    status, body = get("/ml/v2/health/ready")
    assert status == 200 and json.loads(body) == {"ready": True}
    status, body = get("/ml/v2/models/tiny")
    assert status == 200 and json.loads(body)["inputs"][0]["shape"] == [-1, 3, 8, 8]
    status, body = post("/ml/v2/models/tiny/infer", INFER.encode(), "application/json")
    assert status == 200, body
    logits = np.reshape(json.loads(body)["outputs"][0]["data"], (1, 4))
    np.testing.assert_allclose(logits, expected_logits(IMAGE), rtol=1e-5)
    status, body = post("/ml/v2/models/tiny/predict", png_bytes(2), "image/png")
    assert status == 200 and json.loads(body)["model_version"] == "1"
    status, body = post("/ml/v2/models/nope/infer", b"{}", "application/json")
    assert status == 404 and "nope" in json.loads(body)["error"]
    status, body = get("/ml/metrics")
    assert status == 200 and b"model_agnostic_requests_total" in body


def test_flask_blueprint_inside_a_host_app(dataplane: Any) -> None:
    flask = pytest.importorskip("flask")
    from model_agnostic.adapters.flask_app import create_blueprint

    host = flask.Flask("host")

    @host.get("/hello")
    def hello() -> str:
        return "host route"

    host.register_blueprint(create_blueprint(dataplane), url_prefix="/ml")
    client = host.test_client()
    assert client.get("/hello").data == b"host route"

    def get(path: str) -> tuple[int, bytes]:
        answer = client.get(path)
        return answer.status_code, answer.data

    def post(path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        answer = client.post(path, data=body, content_type=content_type)
        return answer.status_code, answer.data

    check_answers(get, post)


def test_flask_create_app_from_a_config(tmp_path: Path) -> None:
    pytest.importorskip("flask")
    from model_agnostic.adapters.flask_app import create_app

    app = create_app(write_tiny_model(tmp_path, serving='name = "solo"'))
    answer = app.test_client().get("/v2/models/solo/ready")
    assert answer.status_code == 200 and answer.get_json() == {"name": "solo", "ready": True}


def test_django_urls_inside_a_host_project(dataplane: Any) -> None:
    pytest.importorskip("django")
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(DEBUG=False, ALLOWED_HOSTS=["testserver"], ROOT_URLCONF=__name__,
                           SECRET_KEY="tests-only", DATA_UPLOAD_MAX_MEMORY_SIZE=8 << 20,
                           MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"])
        django.setup()
    from django.http import HttpResponse
    from django.test import Client
    from django.urls import clear_url_caches, include, path

    from model_agnostic.adapters.django_views import urls

    global urlpatterns
    urlpatterns = [path("hello", lambda request: HttpResponse(b"host route")),
                   path("ml/", include(urls(dataplane)))]
    clear_url_caches()
    client = Client(enforce_csrf_checks=True)  # POSTs pass only because the view is exempt
    assert client.get("/hello").content == b"host route"

    def get(url: str) -> tuple[int, bytes]:
        answer = client.get(url)
        return answer.status_code, answer.content

    def post(url: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        answer = client.post(url, data=body, content_type=content_type)
        return answer.status_code, answer.content

    check_answers(get, post)


urlpatterns: list[Any] = []
