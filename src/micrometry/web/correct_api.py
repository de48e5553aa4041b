"""The correction page's routes: ``/correct`` and ``/api/correct/...`` (the work is :mod:`.corrections`)."""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from micrometry.errors import InputError
from micrometry.web.bounded import run_bounded
from micrometry.web.corrections import Corrections


async def _json(request: Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        raise InputError("the request body must be JSON") from None
    if not isinstance(body, dict):
        raise InputError("the request body must be a JSON object")
    return body


async def _uploads(form, field: str) -> list[tuple[str, bytes]]:
    """The files of one form field; an empty file input sends one nameless empty part, which is none."""
    found = []
    for f in form.getlist(field):
        if hasattr(f, "read") and f.filename:
            found.append((f.filename, await f.read()))
    return found


def add_correction_routes(app: FastAPI, corrections: Corrections, gate) -> None:
    """Serve the correction page and its endpoints on ``app``; heavy ones pass ``gate`` (a HeavyGate)."""
    page = resources.files("micrometry.web").joinpath("correct.html").read_text(encoding="utf-8")
    app.state.corrections = corrections

    @app.get("/correct", response_class=HTMLResponse)
    async def correct_page() -> str:
        return page

    @app.post("/api/correct/open")
    async def open_images(request: Request):
        limit = corrections.limits.max_particle_images
        async with request.form(max_files=2 * limit + 10) as form:
            async with gate.slot():
                files = await _uploads(form, "files")
                annotations = await _uploads(form, "annotations")
                if not files:
                    raise InputError("Choose one or more images first")
                return await run_bounded(request, corrections.limits, corrections.open, files, annotations)

    @app.post("/api/correct/predict")
    async def predict_again(request: Request):
        async with gate.slot():
            return await run_bounded(request, corrections.limits, corrections.predict_again)

    @app.post("/api/correct/edit")
    async def edit(request: Request):
        body = await _json(request)
        try:
            args = (body["op"], int(body["width"]), int(body["height"]), list(body["objects"]))
        except (KeyError, TypeError, ValueError):
            raise InputError("an edit needs op, width, height and objects") from None
        return await run_in_threadpool(corrections.edit, *args, body.get("line"))

    @app.post("/api/correct/save")
    async def save(request: Request):
        body = await _json(request)
        return await run_in_threadpool(corrections.save, list(body.get("images", [])))

    @app.post("/api/correct/finetune")
    async def finetune(request: Request):
        body = await _json(request)
        try:
            minutes = float(body.get("minutes", 5))
        except (TypeError, ValueError):
            raise InputError("the time budget must be a number of minutes") from None
        return await run_in_threadpool(corrections.start_finetune, minutes)

    @app.get("/api/correct/finetune")
    async def finetune_status():
        return corrections.finetune_status()
