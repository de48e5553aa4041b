"""The FastAPI application: one page, two JSON endpoints, clear errors, bounded memory.

Every bad input gets a 4xx with a one-line message; a 500 means a bug. What one
request may cost is bounded in three places: the body (:class:`BodyLimit`, by
counting bytes as they arrive), what it unpacks and decodes
(:mod:`micrometry.web.uploads`, the image header check), and how many run at
once (:class:`HeavyGate`: a few at a time, a bounded queue, 503 beyond it).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from micrometry.errors import InputError
from micrometry.web import options, samples
from micrometry.web.bounded import run_bounded
from micrometry.web.correct_api import add_correction_routes
from micrometry.web.corrections import Corrections
from micrometry.web.services import (
    MAX_FRAMES,
    Limits,
    RequestCancelled,
    Services,
)

log = logging.getLogger("micrometry.web")

RETRY_AFTER_S = 10


class UploadTooLarge(InputError):
    """The request body passed the upload limit (answered 413)."""


class ServerBusy(Exception):
    """More heavy requests are waiting than the queue holds (answered 503 with Retry-After)."""


class HeavyGate:
    """At most ``workers`` heavy requests run at once and ``queue`` more wait; any beyond are turned away.

    Parameters
    ----------
    workers : int
        Requests that may decode, predict and measure at the same time (each holds its images in memory).
    queue : int
        Requests that may wait for a worker.
    """

    def __init__(self, workers: int = 2, queue: int = 32):
        self.workers, self.queue = workers, queue
        self._running = asyncio.Semaphore(workers)
        self._waiting = self._busy = 0

    @asynccontextmanager
    async def slot(self):
        if self._waiting >= self.queue:
            raise ServerBusy
        self._waiting += 1
        try:
            await self._running.acquire()
        finally:
            self._waiting -= 1
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1
            self._running.release()
            if self._busy == 0:  # the last heavy request ended
                await run_in_threadpool(release_freed_memory)


def release_freed_memory() -> None:
    """Hand the heap that requests freed back to the OS; glibc keeps it otherwise and the RSS stays at its peak."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
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
                # Raised inside the endpoint's form parsing: the app's handler answers 413.
                raise UploadTooLarge(self.message())
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except UploadTooLarge:
            if not started:
                await self._reject(send)

    def message(self) -> str:
        return f"upload too large: the limit is {self.limit / 1024 / 1024:.0f} MB"

    async def _reject(self, send):
        body = json.dumps({"error": self.message()}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def create_app(
    depth_model: str | Path | None = None,
    particle_model: str | Path | None = None,
    limits: Limits | None = None,
    workers: int = 2,
    queue: int = 32,
    workspace: str | Path | None = None,
) -> FastAPI:
    """Build the app; models load on first use; ``workers`` heavy requests run at once, ``queue`` wait.

    ``workspace``: the correction page's folder (uploads, training data, fine-tuning runs);
    default: a new temporary folder.
    """
    services = Services(depth_model, particle_model, limits)
    services_frames_limit = MAX_FRAMES
    gate = HeavyGate(workers, queue)
    app = FastAPI(title="micrometry", docs_url="/api/docs")
    app.state.services = services
    if workspace is None:
        import tempfile

        workspace = tempfile.mkdtemp(prefix="micrometry-workspace-")
    add_correction_routes(app, Corrections(workspace, services.segmenter, services.limits), gate)
    page = resources.files("micrometry.web").joinpath("page.html").read_text(encoding="utf-8")
    for key, value in (
        ("NM_PER_PX", options.NM_PER_PX),
        ("PIXEL_SIZE", options.PIXEL_SIZE),
        ("UNIT", options.UNIT),
    ):
        page = page.replace(
            f"__{key}__", f"{value:g}" if isinstance(value, float) else value
        )  # one set of defaults

    @app.exception_handler(UploadTooLarge)
    async def too_large(request: Request, exc: UploadTooLarge):
        return JSONResponse({"error": str(exc)}, status_code=413, headers={"connection": "close"})

    @app.exception_handler(InputError)
    async def input_error(request: Request, exc: InputError):
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(ServerBusy)
    async def busy(request: Request, exc: ServerBusy):
        return JSONResponse(
            {"error": f"the server is busy; try again in {RETRY_AFTER_S} s"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    @app.exception_handler(RequestCancelled)
    async def cancelled(request: Request, exc: RequestCancelled):
        return JSONResponse({"error": "request cancelled: the client disconnected"}, status_code=499)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("request failed")
        return JSONResponse(
            {
                "error": f"micrometry could not process this upload ({type(exc).__name__}); "
                "the server log has the details"
            },
            status_code=500,
        )

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.get("/api/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/api/samples/{kind}.zip")
    async def sample_zip(kind: str):
        files = await run_in_threadpool(_sample_files, kind)
        return Response(
            _zip(files),
            media_type="application/zip",
            headers={"content-disposition": f'attachment; filename="micrometry_{kind}_samples.zip"'},
        )

    @app.post("/api/sem")
    async def sem(request: Request):
        async with request.form(max_files=services.limits.max_sem_images + 10) as form:
            nm_per_px = options.positive_number(
                form.get("nm_per_px"),
                "nm per pixel",
                options.NM_PER_PX,
                options.MAX_NM_PER_PX,
                options.MIN_NM_PER_PX,
            )
            async with gate.slot():
                files = await _files(form, "files", "sem")
                return await run_bounded(request, services.limits, services.sem, files, nm_per_px)

    @app.post("/api/frames")
    async def frames(request: Request):
        async with request.form(max_files=services_frames_limit + 10) as form:
            nm_per_px = options.positive_number(
                form.get("nm_per_px"), "nm per pixel", options.NM_PER_PX, options.MAX_NM_PER_PX
            )
            async with gate.slot():
                files = await _files(form, "files", "frames")
                return await run_bounded(request, services.limits, services.frames, files, nm_per_px)

    @app.post("/api/particles")
    async def particles(request: Request):
        async with request.form(max_files=services.limits.max_particle_images + 10) as form:
            pixel_text = form.get("pixel_size")
            pixel_size = options.pixel_size_or_auto(pixel_text)
            unit = options.length_unit(
                form.get("unit"), pixel_size, pixel_size_given=bool(str(pixel_text or "").strip())
            )
            exclude_edges = options.flag(form.get("exclude_edges"))
            async with gate.slot():
                files = await _files(form, "file", "particles") + await _files(
                    form, "files", "particles", True
                )
                return await run_bounded(
                    request, services.limits, services.particles, files, pixel_size, unit, exclude_edges
                )

    return BodyLimit(app, services.limits.max_upload_bytes)  # type: ignore[return-value]


async def _files(form, field: str, kind: str, optional: bool = False) -> list[tuple[str, bytes]]:
    """The uploads of one form field as (name, bytes), or the sample data when the form asks for it."""
    if options.flag(form.get("sample")):
        return [] if optional else await run_in_threadpool(_sample_files, kind)
    # read inside the gate: waiting requests keep their uploads spooled to disk, not in memory
    return [(f.filename or "", await f.read()) for f in form.getlist(field) if hasattr(f, "read")]


def _sample_files(kind: str) -> list[tuple[str, bytes]]:
    if kind in ("sem", "depth"):
        return list(samples.sem_samples())
    if kind == "particles":
        return list(samples.particle_samples())
    if kind == "frames":
        return list(samples.frame_samples())
    raise HTTPException(404, f"no sample data called {kind!r} (sem, particles, frames)")


def _zip(files: list[tuple[str, bytes]]) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files:
            archive.writestr(name, data)
    return buffer.getvalue()
