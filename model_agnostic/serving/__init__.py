"""Serving: the I/O-free data plane, adaptive batching, the model repository, the server.

    from model_agnostic.serving import BackgroundServer, build_dataplane

    with BackgroundServer(build_dataplane("examples/chexnet/artifacts/chexnet")) as server:
        print(server.url)  # Open Inference Protocol v2, /ui, /metrics

Nothing here imports Flask, Django or waitress until it is used.
"""

from .batching import Batcher
from .dataplane import DataPlane, Request, Response
from .repository import ModelRepository, ServedVersion
from .server import BackgroundServer, ServerOptions, build_dataplane, serve, wsgi_app

__all__ = [
    "BackgroundServer",
    "Batcher",
    "DataPlane",
    "ModelRepository",
    "Request",
    "Response",
    "ServedVersion",
    "ServerOptions",
    "build_dataplane",
    "serve",
    "wsgi_app",
]
