"""``micrometry serve``."""

from __future__ import annotations

import typer

from micrometry.options import number, threads_option


def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 to share on the network)."),
    port: int = number(7860, "--port", low=1, high=65535, help="Port."),
    depth_model: str = typer.Option(
        "shipped",
        help="'shipped' (the depth model that comes with micrometry), a depth "
        "run folder or a model folder written by `micrometry export`.",
    ),
    particle_model: str = typer.Option(
        "shipped",
        help="'shipped' (the particle model that comes with micrometry), a "
        "model name (watershed), a run folder or an exported model folder.",
    ),
    workspace: str = typer.Option(
        "micrometry-workspace",
        "--workspace",
        help="Folder for the correction page (/correct): images opened, corrected training data "
        "(workspace/training: images/ + masks/) and fine-tuning runs (workspace/runs).",
    ),
    max_upload_mb: int = number(20, "--max-upload-mb", low=1, help="Largest upload accepted, in MB."),
    workers: int = number(
        2,
        "--workers",
        low=1,
        high=64,
        help="Uploads processed at once (each holds its images in "
        "memory); up to 32 more wait, any beyond get 503 with Retry-After.",
    ),
    threads: int = threads_option(),
) -> None:
    """Start the web app: an SEM tab (depth maps, metrology), a Particles tab (overlay, measurements) and a correction page (/correct: fix outlines, save them as training data, fine-tune, predict again)."""
    from micrometry.train.loop import configure_threads
    from micrometry.web.app import create_app
    from micrometry.web.server import serve_app
    from micrometry.web.services import Limits, Services

    configure_threads(threads or None)

    # Load both models once now: a bad --*-model is one line and exit 2 here, not an error on every request.
    check = Services(depth_model, particle_model)
    check.depth_model(), check.segmenter()
    app = create_app(
        depth_model,
        particle_model,
        Limits(max_upload_bytes=max_upload_mb * 1024 * 1024),
        workers=workers,
        workspace=workspace,
    )
    typer.echo(f"micrometry web app on http://{host}:{port}  (Ctrl-C to stop)")
    typer.echo(f"correct outlines and fine-tune: http://{host}:{port}/correct  (workspace {workspace})")
    serve_app(app, host, port)
