"""The FastAPI application: one page, two JSON endpoints, clear errors, an upload limit."""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from micrometry.errors import InputError
from micrometry.options import DEFAULT_NM_PER_PX, PIXEL_UNIT
from micrometry.web.services import Limits, Services

log = logging.getLogger("micrometry.web")


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Reject request bodies over ``limit`` bytes with 413, whether or not they declare a length."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._reject(send)
        received = 0
        started = False

        async def counting_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send):
        mb = self.limit / 1024 / 1024
        body = json.dumps({"error": f"upload too large: the limit is {mb:.0f} MB"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


def create_app(depth_model: str | Path | None = None, particle_model: str | Path | None = None,
               limits: Limits | None = None) -> FastAPI:
    """Build the app; models load on first use."""
    services = Services(depth_model, particle_model, limits)
    app = FastAPI(title="micrometry", docs_url="/api/docs")
    app.state.services = services
    page = resources.files("micrometry.web").joinpath("page.html").read_text(encoding="utf-8")

    @app.exception_handler(InputError)
    async def input_error(request: Request, exc: InputError):
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("request failed")
        return JSONResponse({"error": f"micrometry could not process this upload ({type(exc).__name__}); "
                                      "the server log has the details"}, status_code=500)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.get("/api/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.post("/api/sem")
    async def sem(request: Request):
        form = await request.form(max_files=services.limits.max_sem_images + 10)
        files = [(f.filename or "upload", await f.read()) for f in form.getlist("files") if hasattr(f, "read")]
        if not files:
            raise InputError("choose one or more SEM images (or a zip) first")
        nm_per_px = _number(form.get("nm_per_px", str(DEFAULT_NM_PER_PX)), "nm per pixel")
        return await run_in_threadpool(services.sem, files, nm_per_px)

    @app.post("/api/particles")
    async def particles(request: Request):
        form = await request.form(max_files=2)
        upload = form.get("file")
        if upload is None or not hasattr(upload, "read"):
            raise InputError("choose an image first")
        pixel_size = _number(form.get("pixel_size", "1"), "pixel size")
        unit = str(form.get("unit", PIXEL_UNIT))[:8] or PIXEL_UNIT  # the CLI's default: pixels unless calibrated
        return await run_in_threadpool(services.particles, upload.filename or "upload", await upload.read(),
                                       pixel_size, unit)

    return BodyLimit(app, services.limits.max_upload_bytes)  # type: ignore[return-value]


def _number(text, what: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number, got {text!r}") from None
    if not value > 0:
        raise InputError(f"{what} must be positive, got {value}")
    return value
