"""The chat page at `/`: plain HTML, CSS and JavaScript shipped in the package (`server/webui/`, no build step).

The page is a client of the public API like any other: it streams /v1/chat/completions and reads each chunk's
"ryzanstein" field (how each token came, the rounds behind it) to show speculation live. Its files hold no
secret, so they are served without the API key; the page asks for the key and sends it with its API calls.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.responses import Response

from ..errors import RyzansteinError

FOLDER = Path(__file__).with_name("webui")
TYPES = {"index.html": "text/html; charset=utf-8", "chat.css": "text/css; charset=utf-8",
         "chat.js": "text/javascript; charset=utf-8"}
# the page loads only its own files and calls only this server
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                                      "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'"}


def add_webui_routes(app: FastAPI) -> None:
    """GET / (the page) and GET /webui/{name} (its style and script), read once from the package."""
    missing = [n for n in TYPES if not (FOLDER / n).is_file()]
    if missing:
        raise RyzansteinError(f"the chat page's files ({', '.join(missing)}) are missing from {FOLDER}: reinstall "
                              "the package, or serve with --no-webui")
    files = {name: (FOLDER / name).read_bytes() for name in TYPES}

    def answer(name: str) -> Response:
        return Response(files[name], media_type=TYPES[name], headers=HEADERS)

    async def page():
        return answer("index.html")

    async def asset(name: str):
        if name not in files or name == "index.html":
            raise HTTPException(404, f"no such file of the chat page: {name!r}")
        return answer(name)

    app.add_api_route("/", page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/webui/{name}", asset, methods=["GET"], include_in_schema=False)
