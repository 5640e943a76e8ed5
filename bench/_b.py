"""(b) and (c) only, predictq side: 4 clients submit+wait for N s on LR; lone latency."""
import sys, tempfile, time
from pathlib import Path
from bench import scenarios
from bench.clients import PREDICTQ
from bench.models import LR, build
from bench.systems import Predictq, Reaper, RedisServer

def main():
    tmp = Path(tempfile.mkdtemp())
    reaper = Reaper()
    try:
        models = build(2000, 10, 2000, tmp / "models")
        rs = RedisServer(reaper, tmp / "redis")
        pq = Predictq(reaper, rs.url, tmp / "pq")
        pq.registry.register(LR, models.estimators[LR], promote=True)
        w = pq.spawn_worker(2, tmp / "w.log")
        pq.wait_ready(w)
        rows = models.rows(2000)
        secs = float(sys.argv[1]) if len(sys.argv) > 1 else 4
        for i in range(2):
            f = scenarios.concurrent(PREDICTQ, pq.client_spec(), LR, rows, 4, secs, 20, 60)
            print(f"concurrent: {f['jobs_per_s']:.0f} jobs/s p50 {f['p50_ms']:.2f} ms p99 {f['p99_ms']:.2f}")
        f = scenarios.lone(PREDICTQ, pq, LR, rows[:320], 20, 60)
        print(f"lone: p50 {f['p50_ms']:.2f} p95 {f['p95_ms']:.2f} p99 {f['p99_ms']:.2f}")
    finally:
        reaper.close()

if __name__ == '__main__':
    main()
