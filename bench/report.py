"""The printed table and the JSON file of one run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

COLUMNS = [
    ("scenario", 15),
    ("model", 7),
    ("system", 13),
    ("jobs", 7),
    ("jobs/s", 9),
    ("rows/s", 11),
    ("p50 ms", 8),
    ("p95 ms", 8),
    ("p99 ms", 8),
    ("vs naive", 9),
    ("vs in-proc", 10),
]


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """predictq (and in-process) against naive, and predictq against in-process, per model."""
    by_key = {(r["scenario"], r["model"], r["system"]): r for r in rows}
    for r in rows:
        naive = by_key.get((r["scenario"], r["model"], "naive"))
        bound = by_key.get((r["scenario"], r["model"], "in-process"))
        if naive is not None and r["system"] != "naive":
            r["ratio_to_naive"] = r["rows_per_s"] / naive["rows_per_s"]
        if bound is not None and r["system"] == "predictq":
            r["ratio_to_in_process"] = r["rows_per_s"] / bound["rows_per_s"]


def brief(figures: dict[str, Any]) -> str:
    """One measurement on one line, for the progress log."""
    keys = ("jobs_per_s", "p50_ms", "server_cpu_ms_per_job", "failed", "wrong")
    shown = {k: figures[k] for k in keys if figures.get(k) is not None}
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in shown.items())  # fmt: skip


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def _ratio(value: Any) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}x"
    return f"{value:.2f}x" if value >= 0.01 else f"{value:.1e}x"


def table(rows: list[dict[str, Any]]) -> str:
    head = " ".join(
        name.rjust(width) if i > 2 else name.ljust(width) for i, (name, width) in enumerate(COLUMNS)
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        jobs = "1 call" if r["system"] == "in-process" else _num(r["jobs"])
        cells = [
            r["scenario"],
            r["model"],
            r["system"],
            jobs,
            "-" if r["system"] == "in-process" else _num(r["jobs_per_s"], 0),
            _num(r["rows_per_s"], 0),
            _num(r.get("p50_ms"), 2),
            _num(r.get("p95_ms"), 2),
            _num(r.get("p99_ms"), 2),
            _ratio(r.get("ratio_to_naive")),
            _ratio(r.get("ratio_to_in_process")),
        ]
        lines.append(
            " ".join(
                c.rjust(w) if i > 2 else c.ljust(w)
                for i, (c, (_, w)) in enumerate(zip(cells, COLUMNS, strict=True))
            )
        )
    return "\n".join(lines)


def promotion_text(p: dict[str, Any]) -> str:
    lines = [
        f"promotion under load ({p['model']}, {p['jobs']:,} jobs, v{p['v2']} promoted mid-run):",
        f"  promote() took {p['promote_call_ms']:.1f} ms; at that moment "
        f"{p['submitted_before_promote']:,} jobs were submitted, {p['queued_at_promote']:,} "
        f"queued and {p['running_at_promote']:,} running",
        f"  jobs on v1 {p['jobs_on_v1']:,}, on v{p['v2']} {p['jobs_on_v2']:,}; failed "
        f"{p['failed']}; wrong predictions {p['wrong']}",
        f"  worker processes reaching v{p['v2']}: {p['workers_reaching_v2']} of "
        f"{p['worker_processes']}; every process on v{p['v2']} (first v{p['v2']} job started) "
        f"{_num(p['all_on_v2_started_ms'], 1)} ms after promote() returned (finished: "
        f"{_num(p['all_on_v2_finished_ms'], 1)} ms)",
        f"  jobs started after promote() returned that ran on v1: {p['v1_started_after_promote']}",
    ]
    for worker, w in sorted(p["per_worker"].items()):
        lines.append(
            f"    {worker}: first job after promote ran v{w.get('first_version')}, "
            f"started +{_num(w.get('first_v2_started_ms'), 1)} ms, finished "
            f"+{_num(w.get('first_v2_finished_ms'), 1)} ms; {w['jobs_after']:,} jobs after, "
            f"{w['v1_after']} on v1"
        )
    return "\n".join(lines)


def memory_text(m: dict[str, Any]) -> str:
    lines = [
        f"memory ({m['model']}: {m['trees']} trees, joblib file {m['file_mib']:.1f} MiB):",
    ]
    for c in ("c1", "c2"):
        if c in m:
            procs = ", ".join(f"{v['pss_mib']:.0f}" for v in m[c]["processes"].values())
            lines.append(
                f"  -{c[1:]}: PSS {m[c]['pss_mib']:.1f} MiB (per process: {procs}), "
                f"RSS {m[c]['rss_mib']:.1f} MiB, worker ready in "
                f"{m[c]['startup_seconds']:.1f}s"
            )
    if "c2_after_promote" in m:
        a = m["c2_after_promote"]
        procs = ", ".join(f"{v['pss_mib']:.0f}" for v in a["processes"].values())
        lines.append(
            f"  -2 after promoting v{a['version']} (the same forest registered again) on the "
            f"running worker: PSS {a['pss_mib']:.1f} MiB (+{a['pss_growth_mib']:.0f} MiB; per "
            f"process: {procs}), RSS "
            f"{a['rss_mib']:.1f} MiB; every pool process served v{a['version']} "
            f"{a['all_on_new_version_seconds']:.1f}s after promote()"
        )
    if "pss_ratio_c2_c1" in m:
        lines.append(
            f"  PSS(-c 2) / PSS(-c 1) = {m['pss_ratio_c2_c1']:.3f}  "
            f"(RSS ratio {m['rss_ratio_c2_c1']:.3f})"
        )
    return "\n".join(lines)


def http_text(h: dict[str, Any]) -> str:
    workers = h["api_workers"]
    lines = [
        f"HTTP (predictq api, {workers} uvicorn worker{'s' if workers > 1 else ''}; bulk results "
        f"read by {h['bulk_read'] or '-'}):",
        "  server CPU per job (the api process"
        + (" and its workers" if workers > 1 else "")
        + "): "
        + ", ".join(f"{s} {v:.2f} ms" for s, v in h["server_cpu_ms_per_job"].items()),
    ]
    if h["http_over_python"]:
        lines.append(
            "  HTTP / Python client, jobs/s: "
            + "; ".join(
                f"{s} {v['http_jobs_per_s']:,.0f} / {v['python_jobs_per_s']:,.0f} = "
                f"{v['ratio']:.2f}"
                for s, v in h["http_over_python"].items()
            )
        )
    if "lone_p50_ms" in h:
        p = h["lone_p50_ms"]
        lines.append(
            f"  lone p50: HTTP {p['http']:.2f} ms, Python client {p['python']:.2f} ms "
            f"(HTTP {_ratio(p['http'] / p['python'])})"
        )
    lines.append(f"  failed jobs {h['failed']}, wrong predictions {h['wrong']} (every row)")
    return "\n".join(lines)


def render(results: dict[str, Any]) -> str:
    parts = [table(results["rows"])]
    if results.get("promotion"):
        parts.append(promotion_text(results["promotion"]))
    if results.get("memory"):
        parts.append(memory_text(results["memory"]))
    if results.get("task_events"):
        e = results["task_events"]
        parts.append(
            f"task events (median of {e['rounds']} round(s)): off {e['off_jobs_per_s']:,.0f} "
            f"jobs/s, on {e['on_jobs_per_s']:,.0f} jobs/s; on/off = {e['ratio_on_off']:.3f}"
        )
    if results.get("http"):
        parts.append(http_text(results["http"]))
    parts.extend(results.get("notes", []))
    for err in results.get("errors", []):
        parts.append(f"ERROR in {err['scenario']}: {err['error']}")
    return "\n\n".join(parts)


def save(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
