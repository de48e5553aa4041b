"""``micrometry serve``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from micrometry.options import number


def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 to share on the network)."),
    port: int = number(7860, "--port", low=1, high=65535, help="Port."),
    depth_model: Optional[Path] = typer.Option(None, help="Depth run folder (default: the shipped model)."),
    particle_model: Optional[str] = typer.Option(None, help="Particle model name or run folder (default: shipped)."),
    max_upload_mb: int = number(20, "--max-upload-mb", low=1, help="Largest upload accepted, in MB."),
) -> None:
    """Start the web app: an SEM tab (depth maps, metrology) and a Particles tab (overlay, measurements)."""
    import uvicorn

    from micrometry.web.app import create_app
    from micrometry.web.services import Limits

    app = create_app(depth_model, particle_model, Limits(max_upload_bytes=max_upload_mb * 1024 * 1024))
    typer.echo(f"micrometry web app on http://{host}:{port}  (Ctrl-C to stop)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
