"""Running the gateway under uvicorn: what ``predictq api`` does."""

from __future__ import annotations

import os

import uvicorn

from registry import Settings

from .auth import KeyRing


def serve(
    settings: Settings, *, host: str, port: int, workers: int, insecure: bool, access_log: bool
) -> None:
    """Serve ``create_app`` on ``host:port`` with ``workers`` processes until stopped."""
    if insecure:
        # uvicorn's worker processes read their settings from the environment afresh.
        os.environ["PREDICTQ_API_INSECURE_NO_AUTH"] = "true"
        settings = settings.model_copy(update={"api_insecure_no_auth": True})
    # Fail here, with one line, rather than in every worker process.
    KeyRing.from_settings(settings)
    uvicorn.run(
        "producer.api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # Long-polls end within api_max_wait, so a graceful stop can let them finish.
        timeout_graceful_shutdown=int(settings.api_max_wait) + 5,
        server_header=False,
        # Access lines show the method, path and status, never headers, so keys stay out of logs.
        access_log=access_log,
    )
