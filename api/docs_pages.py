"""/docs (Swagger UI) and /redoc with their scripts served by the API itself.

FastAPI's own pages load Swagger UI and ReDoc from a public CDN, so on a maintenance network
without internet they stay blank. The `fastapi-offline` package ships those assets (and its
favicon); they are mounted under /static-docs and the pages point there: no request leaves the
station when a technician opens the docs. ReDoc's bundle names one more outside address, the
Redocly logo of its menu footer (cdn.redoc.ly): the bundle is served with that address pointing at
the local favicon instead (patched once, on the first request for it).
"""

from functools import cache
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

ASSETS = Path(fastapi_offline.__file__).parent / "static"
PREFIX = "/static-docs"
REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"


@cache
def redoc_bundle() -> bytes:
    return (ASSETS / "redoc.standalone.js").read_bytes().replace(REDOC_LOGO, f"{PREFIX}/favicon.png".encode())


def add(app: FastAPI) -> None:
    @app.get(f"{PREFIX}/redoc.standalone.js", include_in_schema=False)
    async def redoc_js() -> Response:  # before the mount: this route answers first
        return Response(redoc_bundle(), media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})

    app.mount(PREFIX, StaticFiles(directory=ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} — Swagger UI",
            swagger_js_url=f"{PREFIX}/swagger-ui-bundle.js", swagger_css_url=f"{PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{PREFIX}/favicon.png", swagger_ui_parameters=app.swagger_ui_parameters)

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} — ReDoc",
                              redoc_js_url=f"{PREFIX}/redoc.standalone.js", redoc_favicon_url=f"{PREFIX}/favicon.png",
                              with_google_fonts=False)
