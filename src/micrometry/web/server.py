"""Serving the app with uvicorn, with connections that cannot be held open for free.

uvicorn closes a keep-alive connection that idles between requests after
``timeout_keep_alive`` seconds, but not one that connects and then sends
nothing (or its request line a byte at a time): each such connection would be
held open forever. :class:`IdleClosingH11` starts the same timer when the
connection opens and again after every piece of a request head that arrives.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol

# Seconds a connection may stay silent (before its first request, or between requests).
IDLE_TIMEOUT_S = 10.0


class IdleClosingH11(H11Protocol):
    """uvicorn's h11 protocol, closing connections that stay silent before sending a whole request head."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_idle_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is None:  # the request head is not complete yet: it must keep arriving
            self._arm_idle_timer()

    def _arm_idle_timer(self) -> None:
        self._unset_keepalive_if_required()
        if not self.transport.is_closing():
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )


def serve_app(app, host: str, port: int, idle_timeout_s: float = IDLE_TIMEOUT_S) -> None:
    """Run ``app`` until Ctrl-C, closing connections silent for ``idle_timeout_s``."""
    import uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        http=IdleClosingH11,
        timeout_keep_alive=idle_timeout_s,
    )
