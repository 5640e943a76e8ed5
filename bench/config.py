"""Sizes of one run: the full benchmark, or the quick one (under a minute)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    quick: bool
    data_rows: int  # make_classification rows; jobs take their rows from these
    rf_trees: int
    rf_fit_rows: int  # rows the 100-tree forest is fitted on (keeps its fit short)
    bulk_jobs: int  # predictq and in-process, per model
    naive_bulk_jobs: int  # the naive baseline is slow: a smaller N, reported as a rate
    clients: int  # concurrent client processes
    concurrent_seconds: float
    lone_jobs: int
    warmup_jobs: int
    promotion_jobs: int
    promotion_chunk: int  # jobs per submit_many call of the producer thread
    big_rows: int  # the large forest of the memory scenario
    big_trees: int
    jobs_per_pool_process: int  # memory is read after each pool process served this many
    event_rounds: int  # --events: off/on pairs of the bulk scenario
    worker_concurrency: int = 2
    job_timeout: float = 600.0
    # --http: the same clients, seconds and bulk jobs for the Python client, naive and HTTP
    http_clients: int = 16  # concurrent client processes (Python, naive) or connections (HTTP)
    http_seconds: float = 10.0
    http_bulk_jobs: int = 20_000
    api_workers: int = 1  # uvicorn worker processes of `predictq api` (--api-workers)

    @classmethod
    def full(cls) -> Config:
        return cls(
            quick=False,
            data_rows=50_000,
            rf_trees=100,
            rf_fit_rows=10_000,
            bulk_jobs=50_000,
            naive_bulk_jobs=5_000,
            clients=4,
            concurrent_seconds=5.0,
            lone_jobs=500,
            warmup_jobs=20,
            promotion_jobs=50_000,
            promotion_chunk=500,
            big_rows=100_000,
            big_trees=64,
            jobs_per_pool_process=5,
            event_rounds=3,
        )

    @classmethod
    def quick_run(cls) -> Config:
        return cls(
            quick=True,
            data_rows=2_000,
            rf_trees=100,
            rf_fit_rows=2_000,
            bulk_jobs=2_000,
            naive_bulk_jobs=500,
            clients=4,
            concurrent_seconds=1.5,
            lone_jobs=100,
            warmup_jobs=5,
            promotion_jobs=2_000,
            promotion_chunk=50,
            big_rows=20_000,
            big_trees=33,
            jobs_per_pool_process=3,
            event_rounds=1,
            job_timeout=120.0,
            http_seconds=2.0,
            http_bulk_jobs=2_000,
        )
