"""Django: the data plane's routes as a URLconf, included with one line.

    # urls.py
    from django.urls import include, path
    from model_agnostic.adapters.django_views import urls
    from model_agnostic.serving import build_dataplane

    urlpatterns = [path("ml/", include(urls(build_dataplane("models/"))))]

The views are CSRF-exempt (clients are programs, not browsers holding a session).
Bodies over the data plane's ``max_request_bytes`` or Django's
``DATA_UPLOAD_MAX_MEMORY_SIZE`` get 413 in JSON.
"""

from __future__ import annotations

from typing import Any

from .._deps import require
from ..serving.dataplane import DataPlane, Request, Response

__all__ = ["urls", "view"]


def view(dataplane: DataPlane) -> Any:
    """One Django view answering every data-plane route (``path`` is the rest of the URL)."""
    http = require("django.http", "The Django adapter")
    csrf = require("django.views.decorators.csrf", "The Django adapter")
    exceptions = require("django.core.exceptions", "The Django adapter")

    def dispatch(request: Any, path: str = "") -> Any:
        refused = dataplane.refuse_length(request.META.get("CONTENT_LENGTH"))
        if refused is not None:  # before reading the body
            answer = refused
        else:
            try:
                body = request.body
            except exceptions.RequestDataTooBig:
                answer = Response.error(
                    "request body is over Django's DATA_UPLOAD_MAX_MEMORY_SIZE", 413
                )
            else:
                answer = dataplane.handle(
                    Request(
                        request.method,
                        "/" + path,
                        body,
                        dict(request.headers),
                        request.META.get("QUERY_STRING", ""),
                    )
                )
        response = http.HttpResponse(answer.body, status=answer.status)
        for key, value in answer.headers.items():
            response[key] = value
        return response

    return csrf.csrf_exempt(dispatch)


def urls(dataplane: DataPlane) -> list[Any]:
    """URL patterns to ``include()``; starts the model repository."""
    django_urls = require("django.urls", "The Django adapter")
    dataplane.repository.start()
    handler = view(dataplane)
    return [django_urls.re_path(r"^(?P<path>.*)$", handler)]
