"""How ``predictq status`` draws a snapshot (``registry.status``) for a terminal."""

from __future__ import annotations

import time

from rich.console import Group, RenderableType
from rich.text import Text

from registry.console import make_table
from registry.status import Snapshot

__all__ = ["render"]


def _consumers(consumers: dict[str, int], error: str | None, replaced: int) -> str:
    text = ", ".join(f"{n} {state}" for state, n in consumers.items()) or "-"
    if error:
        text += f" ({error})"
    if replaced:
        text += f"; {replaced} replaced"
    return text


def render(snap: Snapshot, queue: str) -> RenderableType:
    """The snapshot as lines and tables (values printed as text: names may hold [brackets])."""
    parts: list[RenderableType] = []
    for name, depth in snap.queues.items():
        if name != queue and not depth.jobs and not depth.messages:
            continue  # an empty isolation queue says nothing
        parts.append(Text(f"queue {name}: {depth.jobs} job(s) queued, in {depth.messages} "
                          "message(s)"))  # fmt: skip
    parts.append(Text(f"running: {snap.running} job(s); dead letters: {snap.dead_letters}"))
    workers = make_table("worker", "pid", "concurrency", "consumers", "serving", "up",
                         title=f"workers ({len(snap.workers)})")  # fmt: skip
    for w in snap.workers:
        serving = ", ".join(f"{k}=v{v}" for k, v in w.serving.items())
        workers.add_row(Text(w.name), str(w.pid), str(w.concurrency),
                        Text(_consumers(w.consumers, w.consumer_error, w.replaced)),
                        Text(serving or "-"), f"{w.up_seconds:.0f}s")  # fmt: skip
    parts.append(workers)
    recent = snap.recent
    title = "models" + (f" (last {recent.minutes} minutes)" if recent else "")
    models = make_table("model", "aliases", "succeeded", "failed", "cancelled", "jobs/min",
                        title=title)  # fmt: skip
    names = sorted(set(snap.served) | set(recent.models if recent else {}))
    for name in names:
        aliases = ", ".join(f"{a}=v{v}" for a, v in snap.served.get(name, {}).items())
        counts = recent.models.get(name, {}) if recent else {}
        done = counts.get("succeeded", 0) + counts.get("failed", 0)
        rate = f"{done / recent.minutes:.1f}" if recent else "-"
        models.add_row(Text(name or "(none)"), Text(aliases or "-"),
                       str(counts.get("succeeded", 0)), str(counts.get("failed", 0)),
                       str(counts.get("cancelled", 0)), rate)  # fmt: skip
    parts.append(models)
    if recent is not None:
        totals = ", ".join(
            f"{s} {getattr(recent, s)}" for s in ("succeeded", "failed", "cancelled")
        )
        parts.append(Text(f"last {recent.minutes} minutes: {totals}"))
    for f in snap.load_failures:
        when = time.strftime("%H:%M:%S", time.localtime(f.at))
        parts.append(Text.assemble(("load failure", "red"),
                                   f" {f.model} v{f.version} on {f.worker} at {when}: "
                                   f"({f.code}) {f.message}"))  # fmt: skip
    return Group(*parts)
