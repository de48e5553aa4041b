"""Run one request's work under its budget: a time limit, and a stop when its client leaves."""

from __future__ import annotations

import asyncio
import logging

from starlette.concurrency import run_in_threadpool

from micrometry.web.services import CURRENT_BUDGET, RequestBudget
from micrometry.web.uploads import Limits

log = logging.getLogger("micrometry.web")

# How often a running request looks whether its client is still there.
DISCONNECT_POLL_S = 0.5


async def run_bounded(request, limits: Limits, work, *args):
    """Run ``work(*args)`` in a worker thread under the request's budget (time limit, client present).

    The work checks the budget between images and before each network pass
    (:func:`micrometry.web.services.check_budget`). When the client disconnects,
    the work stops at its next check and the worker is free again; the answer
    goes nowhere. Past ``limits.max_request_seconds`` it stops with
    :class:`~micrometry.web.services.RequestTooLong` (answered 400).
    """
    budget = RequestBudget(limits.max_request_seconds)
    token = CURRENT_BUDGET.set(budget)  # the worker thread runs in a copy of this context
    try:
        task = asyncio.ensure_future(run_in_threadpool(work, *args))
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if not budget.cancelled.is_set() and await request.is_disconnected():
                budget.cancelled.set()
                log.info("client left; its request stops at the next check")
    finally:
        CURRENT_BUDGET.reset(token)
