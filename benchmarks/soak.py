"""Soak test: many callers over many tenants against a faulty bundled IdP, for a bounded time.

    python benchmarks/soak.py                      # 5,000 callers, 200 tenants, 60 s
    python benchmarks/soak.py --duration 5 --callers 500 --tenants 20 --backend trio

Prints a Markdown table: calls, errors by type, 401s from the protected resource, IdP token
requests against the minimum needed, and resident memory at start and end.
"""

from __future__ import annotations

import argparse
import math
import random
import resource
import sys
from collections import Counter
from dataclasses import dataclass, field

import anyio
import httpx

from tokenflight import (
    ClientCredentials,
    ClientSecretBasic,
    RefreshPolicy,
    RetryPolicy,
    TokenError,
    TokenManager,
)
from tokenflight.testing import Fault, IdentityProvider

FAULTS = (
    Fault(status=503),
    Fault(status=500),
    Fault(status=429, headers={"Retry-After": "0"}),
    Fault(drop=True),
    Fault(status=200, drop=True),
    Fault(delay=0.3),
)


@dataclass
class SoakConfig:
    callers: int = 5000
    tenants: int = 200
    duration: float = 60.0
    lifetime: float = 3.0
    fault_rate: float = 0.05
    checkers: int = 20
    pause: float = 1.0
    seed: int = 1


@dataclass
class SoakResult:
    config: SoakConfig
    calls: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    expired_handed_out: int = 0
    resource_calls: int = 0
    resource_401: int = 0
    resource_rejected: int = 0
    idp_requests: int = 0
    idp_ok: int = 0
    faults_injected: int = 0
    minimum_requests: int = 0
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    elapsed: float = 0.0

    def table(self) -> str:
        c = self.config
        rows = [
            ("callers / tenants", f"{c.callers} / {c.tenants}"),
            ("duration (s), token lifetime (s)", f"{self.elapsed:.1f}, {c.lifetime:g}"),
            ("IdP fault rate", f"{c.fault_rate:.0%}"),
            ("get_token calls", f"{self.calls:,}"),
            ("calls per second", f"{self.calls / max(self.elapsed, 1e-9):,.0f}"),
            ("errors", str(sum(self.errors.values()))),
            *((f"errors: {name}", str(n)) for name, n in sorted(self.errors.items())),
            ("expired tokens handed out", str(self.expired_handed_out)),
            (
                "resource calls / 401s seen by callers",
                f"{self.resource_calls:,} / {self.resource_401}",
            ),
            ("401s retried by TokenAuth", str(self.resource_rejected - self.resource_401)),
            ("IdP token requests (all / 200)", f"{self.idp_requests:,} / {self.idp_ok:,}"),
            ("faults injected (answered)", f"{self.faults_injected:,}"),
            ("minimum token requests", f"{self.minimum_requests:,}"),
            ("200s / minimum", f"{self.idp_ok / max(self.minimum_requests, 1):.2f}"),
            ("RSS start / end (MB)", f"{self.rss_start_mb:.1f} / {self.rss_end_mb:.1f}"),
        ]
        lines = ["| measure | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in rows]
        lines += [f"\n{name}, for example: {text}" for name, text in self.examples.items()]
        return "\n".join(lines)


def rss_mb() -> float:
    try:
        import psutil

        return float(psutil.Process().memory_info().rss) / 2**20
    except ImportError:  # peak, not current, but better than nothing
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def plan_faults(idp: IdentityProvider, rng: random.Random, rate: float, requests: int) -> int:
    """Queue faults so that each token request is faulty with probability `rate`."""
    planned = injected = 0
    while planned < requests:
        gap = int(math.log(1 - rng.random()) / math.log(1 - rate)) if rate > 0 else requests
        if gap:
            idp.inject(Fault(), count=gap)  # a fault with nothing in it: a normal answer
        idp.inject(rng.choice(FAULTS))
        planned += gap + 1
        injected += 1
    return injected


async def run_soak(config: SoakConfig) -> SoakResult:
    result = SoakResult(config=config)
    rng = random.Random(config.seed)
    result.rss_start_mb = rss_mb()
    retry = RetryPolicy(initial_wait=0.05, max_wait=0.5, cooldown=0.2)  # default budget
    refresh = RefreshPolicy(leeway=10, max_concurrent=10)
    tenants = [f"tenant-{i}" for i in range(config.tenants)]
    async with (
        IdentityProvider(token_lifetime=config.lifetime, max_records=0) as idp,
        httpx.AsyncClient(limits=httpx.Limits(max_connections=50)) as api,
        TokenManager(retry=retry, refresh=refresh, max_concurrent_fetches=64) as tm,
    ):
        for tenant in tenants:
            idp.add_client(tenant, f"secret-{tenant}")
            tm.register(
                tenant,
                ClientCredentials(
                    token_url=idp.token_url,
                    client_id=tenant,
                    auth=ClientSecretBasic(f"secret-{tenant}"),
                ),
            )
        expected_requests = config.tenants * (config.duration / config.lifetime + 2) * 3
        injected = plan_faults(idp, rng, config.fault_rate, int(expected_requests))
        start = anyio.current_time()
        deadline = start + config.duration

        async def caller(seed: int) -> None:
            local = random.Random(seed)
            while anyio.current_time() < deadline:
                tenant = local.choice(tenants)
                try:
                    token = await tm.get_token(tenant)
                except TokenError as exc:
                    result.errors[type(exc).__name__] += 1
                    result.examples.setdefault(type(exc).__name__, str(exc))
                else:
                    if token.expires_at <= anyio.current_time():
                        result.expired_handed_out += 1
                result.calls += 1
                await anyio.sleep(local.uniform(0, 2 * config.pause))

        auths = {tenant: tm.auth(tenant) for tenant in tenants}

        async def checker(seed: int) -> None:
            # Calls a protected resource the way an application does: TokenAuth adds the
            # token and, on a 401 (a token that expired on the way), fetches anew once.
            local = random.Random(seed)
            while anyio.current_time() < deadline:
                tenant = local.choice(tenants)
                try:
                    response = await api.get(idp.resource_url, auth=auths[tenant])
                except TokenError as exc:
                    result.errors[type(exc).__name__] += 1
                    result.examples.setdefault(type(exc).__name__, str(exc))
                    continue
                result.resource_calls += 1
                result.resource_401 += response.status_code == 401

        async with anyio.create_task_group() as tg:
            for _ in range(config.callers):
                tg.start_soon(caller, rng.randrange(2**32))
            for _ in range(config.checkers):
                tg.start_soon(checker, rng.randrange(2**32))
        result.elapsed = anyio.current_time() - start
        result.resource_rejected = idp.resource_rejections
        result.idp_requests = idp.token_requests
        result.idp_ok = idp.token_requests - _faults_answered(idp, injected)
        result.faults_injected = _faults_answered(idp, injected)
        result.minimum_requests = config.tenants * math.ceil(result.elapsed / config.lifetime)
    result.rss_end_mb = rss_mb()
    return result


def _faults_answered(idp: IdentityProvider, injected: int) -> int:
    # Faults still queued were not used; the rest each answered one token request.
    # The queue holds alternating "normal" runs and single faults, so count the faulty ones.
    pending = [p for p in idp._faults if p.fault != Fault()]
    return injected - len(pending)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = SoakConfig()
    parser.add_argument("--callers", type=int, default=defaults.callers)
    parser.add_argument("--tenants", type=int, default=defaults.tenants)
    parser.add_argument("--duration", type=float, default=defaults.duration)
    parser.add_argument("--lifetime", type=float, default=defaults.lifetime)
    parser.add_argument("--fault-rate", type=float, default=defaults.fault_rate)
    parser.add_argument("--checkers", type=int, default=defaults.checkers)
    parser.add_argument(
        "--pause", type=float, default=defaults.pause, help="mean seconds between a caller's calls"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args(argv)
    config = SoakConfig(
        callers=args.callers,
        tenants=args.tenants,
        duration=args.duration,
        lifetime=args.lifetime,
        fault_rate=args.fault_rate,
        checkers=args.checkers,
        pause=args.pause,
        seed=args.seed,
    )
    result = anyio.run(run_soak, config, backend=args.backend)
    print(result.table())
    return 1 if sum(result.errors.values()) or result.resource_401 else 0


if __name__ == "__main__":
    sys.exit(main())
