"""Flask: a blueprint to mount in an existing app, or a whole app (``create_app``).

    from model_agnostic.adapters.flask_app import create_blueprint
    from model_agnostic.serving import build_dataplane

    app.register_blueprint(create_blueprint(build_dataplane("models/")), url_prefix="/ml")

Every endpoint of the data plane is served under the prefix: the Open Inference
Protocol routes, ``/v2/models/<name>/predict``, ``/metrics``, ``/openapi.json``, ``/ui``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .._deps import require
from ..serving.dataplane import DataPlane, Request, Response

if TYPE_CHECKING:
    import flask

__all__ = ["create_app", "create_blueprint"]

_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"]


def create_blueprint(dataplane: DataPlane, name: str = "model_agnostic") -> flask.Blueprint:
    """A blueprint answering every data-plane route; starts the model repository."""
    flask = require("flask", "The Flask adapter")
    blueprint = flask.Blueprint(name, __name__)
    dataplane.repository.start()

    @blueprint.route("/", defaults={"path": ""}, methods=_METHODS)
    @blueprint.route("/<path:path>", methods=_METHODS)
    def dispatch(path: str) -> Any:
        return _to_flask(flask, _answer(flask.request, dataplane, path))

    return blueprint


def create_app(target: DataPlane | str | os.PathLike[str]) -> flask.Flask:
    """A Flask app serving a data plane, a config, an artifact or a model repository."""
    flask = require("flask", "The Flask adapter")
    if not isinstance(target, DataPlane):
        from ..serving.server import build_dataplane

        target = build_dataplane(target)
    app = flask.Flask("model_agnostic")
    app.register_blueprint(create_blueprint(target))
    return app


def _answer(request: Any, dataplane: DataPlane, path: str) -> Response:
    refused = dataplane.refuse_length(request.headers.get("Content-Length"))
    if refused is not None:  # before reading the body
        return refused
    body = request.get_data(cache=False)
    query = request.query_string.decode("latin-1")
    return dataplane.handle(Request(request.method, "/" + path, body, dict(request.headers), query))


def _to_flask(flask: Any, response: Response) -> Any:
    return flask.Response(response.body, status=response.status, headers=response.headers)
