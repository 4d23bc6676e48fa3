"""A burst of signatures against plain API reads (issue 30): does password hashing starve the API?

    python -m bench.signing [--signers 50] [--readers 4] [--idle-seconds 8] [--workers 0,64]

Starts one Daphne as the Procfile runs it (production's hashers: Argon2id, m=19 MiB, t=3, p=1) on
its own PostgreSQL database records_bench_signing (dropped and created) and Redis server (a private
redis-server on a free port unless --redis-url names one: databases 0-2 flushed), with --signers approvers, each with a pending
withdrawal request of their unit. For each value of --workers (PASSWORD_CHECK_WORKERS: 0 = the
cores, the default; a large number = in effect no bound), a fresh Daphne is started and:

(1) idle: --readers clients GET /api/crates/ in a loop for --idle-seconds: the GET latencies;
(2) burst: the readers go on while all --signers approvers POST their signed approval at the same
    moment: each signature's latency, the GETs answered meanwhile, and Daphne's memory (RSS, sampled
    every 20 ms) against its RSS just before the burst.

Results: bench-results/signing-<time>.json and a table. No worker runs: the approvals' jobs stay
queued; what is measured is the request path up to the 202.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench-results"
DATABASE_NAME = "records_bench_signing"
PASSWORD = "bench-sign-2026!"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.signing", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--signers", type=int, default=50)
    p.add_argument("--readers", type=int, default=4)
    p.add_argument("--idle-seconds", type=float, default=8.0)
    p.add_argument("--workers", default="0,64", help="PASSWORD_CHECK_WORKERS values to compare (0: the cores)")
    p.add_argument("--database-url", default=os.environ.get(
        "BENCH_SIGNING_DATABASE_URL", f"postgres://postgres@127.0.0.1:5432/{DATABASE_NAME}"))
    p.add_argument("--redis-url", default=os.environ.get("BENCH_SIGNING_REDIS_URL", ""),
                   help="a Redis server of your own (databases 0-2 are flushed); default: a private redis-server")
    return p.parse_args(argv)


def seed(args) -> dict:
    import django

    django.setup()
    from django.contrib.auth.hashers import make_password
    from django.core.management import call_command

    from backend.accounts.models import Role, Unit, User
    from backend.accounts.tokens import access_token_for
    from backend.records.models import WithdrawalRequest

    call_command("migrate", verbosity=0)
    units = 10
    per_unit = -(-args.signers // units)
    call_command("seed_demo", units=units, crates=max(per_unit * 2, 10), requests=0, pending=per_unit,
                 quiet_logins=True, force=True)
    hashed = make_password(PASSWORD)  # production's first hasher: Argon2id
    signers = []
    unit_list = list(Unit.objects.order_by("code"))[:units]
    pending = {u.id: list(WithdrawalRequest.objects.filter(unit=u, status="pending").order_by("request_number"))
               for u in unit_list}
    for i in range(args.signers):
        unit = unit_list[i % units]
        # (straight into the table: the bench's starting world, not audited account creations)
        # (a printed name: every signature manifests one, and a signer without one is refused)
        (user,) = User.objects.bulk_create([User(username=f"{unit.code}.signer{i}", unit=unit, role=Role.APPROVER,
                                                 password=hashed, first_name="Signer", last_name=str(i))])
        request = pending[unit.id][i // units]
        signers.append({"token": str(access_token_for(user)), "request": str(request.id), "version": request.version})
    reader = User.objects.filter(role=Role.STORE).first()
    from django.db import connections

    connections.close_all()
    return {"signers": signers, "reader": str(access_token_for(reader)), "hash": hashed.split("$")[3]}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


def dist(values: list[float]) -> dict:
    return {"n": len(values), "p50": pct(values, 0.5), "p90": pct(values, 0.9), "p99": pct(values, 0.99),
            "max": pct(values, 1.0)}


class RssSampler:
    def __init__(self, pid: int) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.peak = 0
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop_event.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def start(self) -> None:
        self.peak = self.proc.memory_info().rss
        self.thread.start()

    def stop(self) -> int:
        self.stop_event.set()
        self.thread.join()
        return self.peak


async def run_config(args, world, env, workers: int) -> dict:
    import httpx

    from bench.processes import start_procfile_daphne

    daphne, port = start_procfile_daphne({**env, "PASSWORD_CHECK_WORKERS": str(workers)})
    try:
        base = f"http://127.0.0.1:{port}"
        limits = httpx.Limits(max_connections=args.signers + args.readers + 10)
        async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as http:
            reader = {"Authorization": f"Bearer {world['reader']}"}
            for _ in range(5):  # warm: the first requests import and connect
                await http.get("/api/crates/", headers=reader)
            reads: list[tuple[float, float]] = []
            stop = asyncio.Event()

            async def read_loop():
                while not stop.is_set():
                    sent = time.perf_counter()
                    answer = await http.get("/api/crates/", headers=reader)
                    assert answer.status_code == 200, answer.text
                    reads.append((sent, time.perf_counter()))

            readers = [asyncio.create_task(read_loop()) for _ in range(args.readers)]
            idle_from = time.perf_counter()
            await asyncio.sleep(args.idle_seconds)
            idle_to = time.perf_counter()
            import psutil

            rss_before = psutil.Process(daphne.popen.pid).memory_info().rss
            sampler = RssSampler(daphne.popen.pid)
            sampler.start()
            signed: list[float] = []
            statuses: dict[int, int] = {}

            async def sign(signer):
                body = {"version": signer["version"], "signature": {"password": PASSWORD, "meaning": "approved"}}
                sent = time.perf_counter()
                answer = await http.post(f"/api/withdrawal-requests/{signer['request']}/approve/", json=body,
                                         headers={"Authorization": f"Bearer {signer['token']}"})
                statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
                signed.append(time.perf_counter() - sent)

            burst_from = time.perf_counter()
            await asyncio.gather(*(sign(s) for s in world["signers"]))
            burst_to = time.perf_counter()
            peak = sampler.stop()
            stop.set()
            await asyncio.gather(*readers)
        idle = [done - sent for sent, done in reads if idle_from <= sent and done <= idle_to]
        during = [done - sent for sent, done in reads if sent < burst_to and done > burst_from]
        return {
            "password_check_workers": workers or f"cores ({os.cpu_count()})",
            "signatures": dist(signed), "signature_statuses": statuses,
            "burst_seconds": round(burst_to - burst_from, 3),
            "get_idle_ms": dist(idle), "get_during_burst_ms": dist(during),
            "rss_before_mib": round(rss_before / 2**20, 1), "rss_peak_mib": round(peak / 2**20, 1),
            "rss_growth_mib": round((peak - rss_before) / 2**20, 1),
        }
    finally:
        daphne.stop(timeout=20)


def main(argv=None) -> None:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from bench.processes import own_redis

    with own_redis(args.redis_url) as args.redis_url:
        run_bench(args)


def run_bench(args) -> None:
    from bench.sustained import bench_environment

    stamp = f"{datetime.now():%Y%m%d-%H%M%S}"
    env = bench_environment(args, DATABASE_NAME, {
        "JWT_ACCESS_MINUTES": "240", "SIGNATURE_RATE": "10000/min", "LOGIN_RATE_PER_ADDRESS": "10000/min",
    })
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Django's LOGGING made it INFO: one line a request
    results = []
    for workers in (int(w) for w in args.workers.split(",")):
        world = seed(args)  # fresh pending requests each time (an approval moves its request on)
        print(f"bench signing: PASSWORD_CHECK_WORKERS={workers}: {args.readers} readers, burst of "
              f"{args.signers} signatures ...", flush=True)
        results.append(asyncio.run(run_config(args, world, env, workers)))
        _reset(args)
    one_check = check_cpu_ms(world["hash"])
    report = {"when": datetime.now().astimezone().isoformat(timespec="seconds"), "cores": os.cpu_count(),
              "hash": world["hash"], "one_check_cpu_ms": one_check, "args": vars(args), "runs": results}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"signing-{stamp}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nArgon2id {world['hash']}, {os.cpu_count()} cores, {args.signers} signatures at once, "
          f"{args.readers} readers of /api/crates/; one check costs {one_check['p50']} ms of CPU (median of "
          f"{one_check['n']}; the target is 40 ms)\n")
    for run in results:
        s, i, d = run["signatures"], run["get_idle_ms"], run["get_during_burst_ms"]
        print(f"  pool {run['password_check_workers']}: signatures p50/p99/max {s['p50']}/{s['p99']}/{s['max']} ms "
              f"{run['signature_statuses']}; burst {run['burst_seconds']} s; GET p50/p99 idle {i['p50']}/{i['p99']} "
              f"ms (n={i['n']}), during the burst {d['p50']}/{d['p99']} ms (n={d['n']}); Daphne RSS +{run['rss_growth_mib']} "
              f"MiB (peak {run['rss_peak_mib']})")
    print(f"\nresults: {out.relative_to(ROOT)}")
    refused = {code: n for run in results for code, n in run["signature_statuses"].items() if code != 202}
    if refused:  # a burst of refusals measures the refusal, not the signing
        sys.exit(f"bench signing: signatures answered {refused}, not 202: the numbers above are not signing's")


def check_cpu_ms(parameters: str, checks: int = 20) -> dict:
    """CPU time of one check of a hash made with `parameters` ("m=19456,t=3,p=1", as production makes
    them), in this process: what a sign-in or a signature costs a core, apart from any queueing."""
    import time

    from argon2 import PasswordHasher

    cost = dict(item.split("=") for item in parameters.split(","))
    hasher = PasswordHasher(memory_cost=int(cost["m"]), time_cost=int(cost["t"]), parallelism=int(cost["p"]))
    encoded = hasher.hash(PASSWORD)
    times = []
    for _ in range(checks):
        started = time.process_time()
        hasher.verify(encoded, PASSWORD)
        times.append(time.process_time() - started)
    return dist(times)


def _reset(args) -> None:
    """Drop and make the database again for the next configuration."""
    from django.db import connections

    connections.close_all()
    from bench.sustained import bench_environment

    bench_environment(args, DATABASE_NAME, {})


if __name__ == "__main__":
    main()
