"""The ``predictq`` command line."""

from __future__ import annotations

import os
import sys
import time
import uuid
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from producer import cli as producer_cli
from producer import score_cli
from registry import (
    InvalidInput,
    JobNotFound,
    PredictqError,
    RedisUnavailable,
    Registry,
    get_settings,
    keys,
)
from registry import cli as registry_cli
from registry.connection import connect, resolve_url
from registry.console import echo_json, make_console, make_table
from registry.embedded import stop_embedded
from registry.servers import check_server_version

# Help and usage errors print as plain text: Rich markup would eat `pip install 'predictq[api]'`
# and turn `name:key:scope` into an emoji.
app = typer.Typer(help="predictq: asynchronous predictions for scikit-learn models.",
                  no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None)  # fmt: skip
app.add_typer(registry_cli.app, name="models")
app.command()(producer_cli.submit)
app.command()(producer_cli.result)
app.command()(score_cli.score)
redis_app = typer.Typer(help="The embedded local Redis.", no_args_is_help=True,
                        rich_markup_mode=None)  # fmt: skip
app.add_typer(redis_app, name="redis")
dead_app = typer.Typer(help="Dead letters: contained poison jobs and refused messages.",
                       no_args_is_help=True, rich_markup_mode=None)  # fmt: skip
app.add_typer(dead_app, name="dead")
# Literal text, never wrapped when piped (registry/console.py).
console = make_console()
err = make_console(stderr=True)
# How long `predictq worker` waits at start for a Redis that is down, saying so every few seconds.
_START_PATIENCE = 30.0
_SAY_EVERY = 5.0


def _say(message: str) -> None:
    """One line on stderr: printed as text (a message may hold [brackets]) and never wrapped."""
    err.print(Text(" ".join(message.split())), soft_wrap=True, highlight=False)


def _check_redis(url: str) -> None:
    """Before Celery starts: Redis answers and is new enough.

    A Redis that is down or starting is waited for (bounded); a wrong URL, password or server
    version fails at once. Celery would instead retry for ever, from every pool process.
    """
    client = connect(url)
    deadline = time.monotonic() + _START_PATIENCE
    said = -_SAY_EVERY
    try:
        while True:
            try:
                client.ping()
                check_server_version(client)
                return
            except RedisUnavailable as e:
                now = time.monotonic()
                if not e.transient:
                    raise
                if now > deadline:
                    raise RedisUnavailable(f"{e.message} (waited {_START_PATIENCE:.0f}s)") from e
                if now - said >= _SAY_EVERY:
                    _say(f"waiting for Redis: {e.message}")
                    said = now
                time.sleep(1.0)
    finally:
        client.close()


@app.command()
def demo() -> None:
    """Fit, register and promote a model, start a worker, submit jobs, hot-swap to v2."""
    from .demo import run

    run(get_settings(), console)


@app.command()
def worker(
    concurrency: int = typer.Option(
        os.cpu_count() or 1, "--concurrency", "-c", min=1, help="Worker processes."
    ),
    pool: str = typer.Option("prefork", "--pool", "-P", help="Celery pool: prefork or solo."),
    loglevel: str = typer.Option("INFO", "--loglevel", "-l"),
    hostname: str | None = typer.Option(None, "--hostname", "-n", help="Node name."),
    task_events: bool = typer.Option(
        False, "--task-events", "-E", help="Send task events, for Flower (PREDICTQ_TASK_EVENTS)."
    ),
    metrics_port: int | None = typer.Option(
        None,
        "--metrics-port",
        min=1,
        max=65535,
        help="Serve Prometheus /metrics on this port (PREDICTQ_METRICS_PORT).",
    ),
) -> None:
    """Start a Celery worker that serves prediction jobs."""
    from .app import configure
    from .lifecycle import install

    settings = get_settings()
    url = resolve_url(None, settings)
    _check_redis(url)
    events = task_events or settings.task_events
    install(url, task_events=events, metrics_port=metrics_port or settings.metrics_port)
    celery = configure(url, settings)
    celery.worker_main([
        "worker", f"--concurrency={concurrency}", f"--pool={pool}", f"--loglevel={loglevel}",
        # Unique per boot: a restarted container must not inherit its predecessor's name, pids
        # and claim lists (the sweeper tells live processes from dead ones by name and pid).
        f"--hostname={hostname or f'predictq-{uuid.uuid4().hex[:8]}@%h'}",
        # With batching on, pool processes claim the job queue themselves; Celery's consumer
        # then listens on a side queue so the two do not compete for messages.
        "--queues",
        f"{settings.queue},{keys.isolate(settings.queue)}" if not settings.batching
        else f"{settings.queue}.celery",
        # Mingle and gossip only slow start-up: predictq coordinates through Redis keys.
        "--without-mingle", "--without-gossip",
        # Celery's own consumer sends the events of the tasks it runs (PREDICTQ_BATCHING=false);
        # batch consumers send theirs themselves (worker/events.py).
        *(["--task-events"] if events else []),
    ])  # fmt: skip


@app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (see README)."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Redraw live until Ctrl-C."),
    interval: float = typer.Option(2.0, "--interval", min=0.1, help="Seconds between redraws."),
    minutes: int = typer.Option(5, "--minutes", min=1, max=120, help="Throughput window."),
) -> None:
    """Queued and running jobs, workers, served versions, recent throughput and failures."""
    from registry.status import snapshot

    from .status_view import render

    settings = get_settings()
    r = Registry(settings=settings).redis
    out = console  # piped output is read by scripts and greps: never wrapped at 80 columns
    try:
        while True:
            snap = snapshot(r, settings, minutes=minutes)
            if as_json:  # with --watch, one object per line
                print(snap.model_dump_json(), flush=True)
            elif not watch:
                out.print(render(snap, settings.queue))
            else:
                _watch(out, lambda: render(snapshot(r, settings, minutes=minutes),
                                           settings.queue), interval)  # fmt: skip
            if not watch:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return


def _watch(out: Console, draw: Any, interval: float) -> None:
    """Redraw ``draw()`` in place every ``interval`` seconds until Ctrl-C."""
    from rich.live import Live

    with Live(draw(), console=out, auto_refresh=False) as live:
        while True:
            time.sleep(interval)
            live.update(draw(), refresh=True)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def flower(
    ctx: typer.Context,
    port: int = typer.Option(5555, "--port", min=1, max=65535),
    address: str = typer.Option(
        "127.0.0.1", "--address", help="Address to listen on (0.0.0.0: every interface)."
    ),
) -> None:
    """Run Flower, Celery's monitoring UI, against predictq's broker.

    Workers started with -E (PREDICTQ_TASK_EVENTS) send it predictq's jobs. Other options go
    to Flower as they are. Flower has no login by default: pass --basic-auth=user:password
    (or set FLOWER_BASIC_AUTH) before exposing it beyond this host.
    """
    try:
        import flower as _flower  # noqa: F401
    except ImportError as e:
        raise PredictqError("Flower is not installed: pip install 'predictq[flower]'") from e
    from .app import configure

    settings = get_settings()
    celery = configure(resolve_url(None, settings), settings)
    # Like worker_main, start() takes the subcommand first (Flower registers itself as one).
    celery.start(["flower", f"--port={port}", f"--address={address}", *ctx.args])


@app.command()
def api(
    host: str | None = typer.Option(None, "--host", help="Address (PREDICTQ_API_HOST)."),
    port: int | None = typer.Option(None, "--port", min=1, max=65535, help="PREDICTQ_API_PORT."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="PREDICTQ_API_WORKERS."),
    insecure_no_auth: bool = typer.Option(
        False, "--insecure-no-auth", help="Serve without API keys (local development only)."
    ),
    access_log: bool | None = typer.Option(
        None, "--access-log/--no-access-log", help="PREDICTQ_API_ACCESS_LOG (default on)."
    ),
) -> None:
    """Serve the HTTP API (needs `pip install 'predictq[api]'`)."""
    try:
        from producer.api.serve import serve
    except ImportError as e:
        raise PredictqError(
            f"the HTTP API needs its extra: pip install 'predictq[api]' ({e})"
        ) from e
    s = get_settings()
    serve(s, host=host or s.api_host, port=port or s.api_port, workers=workers or s.api_workers,
          insecure=insecure_no_auth,
          access_log=s.api_access_log if access_log is None else access_log)  # fmt: skip


@redis_app.command("start")
def redis_start() -> None:
    """Start the embedded Redis (if none answers) and print its URL."""
    console.print(resolve_url(None, get_settings()))


@redis_app.command("stop")
def redis_stop() -> None:
    """Stop the embedded Redis, flushing its append-only file."""
    stopped = stop_embedded(get_settings().embedded_port)
    console.print("stopped" if stopped else "no embedded Redis was running")


@dead_app.command("list")
def dead_list(
    limit: int = typer.Option(20, "--limit", "-n", min=1),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON list (see README)."),
) -> None:
    """Show the newest dead letters."""
    from .dead_letters import list_dead

    entries = list_dead(Registry().redis, limit)
    if as_json:
        echo_json([{"id": e.get("id"), "error": e["error"], "attempts": e.get("attempts"),
                    "at": e["at"], "message": e.get("message")} for e in entries])  # fmt: skip
        return
    table = make_table("job", "code", "attempts", "when", "message", title="dead letters")
    for entry in entries:
        table.add_row(
            str(entry.get("id") or "(no id)"), entry["error"]["code"],
            str(entry.get("attempts", "-")),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["at"])),
            entry["error"]["message"],
        )  # fmt: skip
    console.print(table)


@dead_app.command("retry")
def dead_retry(
    job_ids: list[str] = typer.Argument(None, help="Job IDs to retry."),
    all_: bool = typer.Option(False, "--all", help="Retry every dead letter."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON list (see README)."),
) -> None:
    """Queue dead-lettered jobs again, with their attempts reset.

    Exits 3 when a named ID has no dead letter (the others are still retried), 1 when one
    could not be retried (its record expired, or no message was kept).
    """
    from .dead_letters import UNRETRYABLE, retry_dead

    if not job_ids and not all_:
        raise InvalidInput("name the job IDs to retry, or pass --all")
    settings = get_settings()
    outcomes = retry_dead(Registry(settings=settings).redis, settings,
                          None if all_ else set(job_ids))  # fmt: skip
    missing = [] if all_ else [j for j in dict.fromkeys(job_ids) if j not in outcomes]
    if as_json:
        echo_json([{"id": j, "outcome": o} for j, o in outcomes.items()]
                  + [{"id": j, "outcome": "not_found"} for j in missing])  # fmt: skip
    else:
        for job_id, outcome in outcomes.items():
            console.print(f"{job_id}: {outcome}")
        if not outcomes and not missing:
            console.print("no dead letters")
    if missing:
        raise JobNotFound(f"no dead letter for {', '.join(missing)}: copy the full job ID "
                          "from `predictq dead list`")  # fmt: skip
    if any(o in UNRETRYABLE for o in outcomes.values()):
        raise typer.Exit(1)


def print_error(error: PredictqError) -> None:
    """An error as one line on stderr: its message printed literally, never as Rich markup."""
    message = " ".join(error.message.split())
    err.print(Text.assemble(("error", "red"), f" ({error.code}): {message}"),
              soft_wrap=True, highlight=False, markup=False, emoji=False)  # fmt: skip


def main() -> None:
    """Entry point: predictq errors print their message, not a traceback."""
    try:
        app()
    except PredictqError as e:
        print_error(e)
        sys.exit(e.exit_code)  # 1 failure, 2 bad input, 3 not found (README)
