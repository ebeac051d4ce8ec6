"""/api/v1/openapi.json and /api/v1/docs: the OpenAPI 3.1 document and its offline Swagger UI.

The page's assets come from the flask-openapi3-swagger package and are served
by us (no CDN), so the docs work without internet access.
"""

from __future__ import annotations

from pathlib import Path

import flask_openapi3_swagger
from flask import Blueprint, Response, current_app, jsonify, send_from_directory

ASSETS = Path(flask_openapi3_swagger.__file__).parent / "templates" / "swagger"

docs = Blueprint("api_docs", __name__, url_prefix="/api/v1")

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Connector access provisioning API</title>
  <link rel="stylesheet" href="/api/v1/docs/assets/css/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/api/v1/docs/assets/js/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({url: "/api/v1/openapi.json", dom_id: "#swagger-ui"});
  </script>
</body>
</html>
"""


@docs.get("/openapi.json")
def openapi_document() -> Response:
    return jsonify(current_app.api_doc)  # type: ignore[attr-defined]


@docs.get("/docs")
def docs_page() -> Response:
    return Response(PAGE, mimetype="text/html")


@docs.get("/docs/assets/<path:name>")
def docs_asset(name: str) -> Response:
    return send_from_directory(ASSETS, name, max_age=86400)
