"""The operator page (issue 5, item 4): three static files, answered without a token like /docs,
because they hold no data. The page's script asks the authenticated JSON endpoints for
everything it shows, with the token the operator types, which it keeps in memory only.

The files are read once, when the app is built, and served with a Content-Security-Policy that
allows only this origin's own script, style and API: no inline script, no other site, no form
submission (so a token field can never end up in a URL, even if the script failed to load).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Final

from fastapi import APIRouter, Response

CONTENT_SECURITY_POLICY: Final = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate each time: after a deploy the page and its script must not disagree.
    "Cache-Control": "no-cache",
}
# URL path -> (file in this package, media type).
ASSETS: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/ui/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/ui/style.css": ("style.css", "text/css; charset=utf-8"),
    # Named by the page, so the browser does not ask for /favicon.ico (a 401 every visit).
    "/ui/icon.svg": ("icon.svg", "image/svg+xml"),
}
PUBLIC_PATHS: Final = frozenset(ASSETS)


def _responder(body: bytes, media_type: str) -> Callable[[], Awaitable[Response]]:
    async def serve() -> Response:
        return Response(body, media_type=media_type, headers=HEADERS)

    return serve


def ui_router() -> APIRouter:
    """The page and its assets, read from the installed package now, not per request."""
    router = APIRouter(include_in_schema=False)
    files = resources.files(__name__)
    for path, (name, media_type) in ASSETS.items():
        body = files.joinpath(name).read_bytes()
        router.add_api_route(path, _responder(body, media_type), methods=["GET"], name=f"ui:{name}")
    return router
