"""The bundled identity provider in its own process, pinned to its own core, and its admin API."""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import IO, Any

import httpx

SECRET = "bench-secret"
CLIENT_BATCH = 2000


def raise_fd_limit() -> None:
    """Allow as many open sockets as the hard limit does (Authlib opens one pool per tenant)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pin(pid: int, core: int) -> bool:
    """Pin a process to one core, where the OS allows it; True when it did."""
    setter = getattr(os, "sched_setaffinity", None)
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if setter is None or len(cores) < 2:
        return False
    setter(pid, {cores[core % len(cores)]})
    return True


@dataclass
class IdPProcess:
    """`python -m tokenflight idp --admin` on a free port, with a fixed token latency.

    Its stderr goes to a temporary file (a live display must not be written over), shown
    only when it fails: it does not start, or it has exited by the time it is stopped.
    """

    latency: float = 0.02
    proc: subprocess.Popen[str] | None = None
    url: str = ""
    pinned: bool = False
    argv: list[str] = field(default_factory=list)
    stderr: IO[str] | None = None

    def start(self, timeout: float = 20.0) -> str:
        self.argv = [
            sys.executable,
            "-m",
            "tokenflight",
            "idp",
            "--port",
            "0",
            "--latency",
            str(self.latency),
            "--admin",
            "--client",
            f"bench:{SECRET}",
        ]
        import processes

        # Closed by stop(), which every start() is paired with.
        self.stderr = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            preexec_fn=raise_fd_limit,
        )
        processes.track(self.proc)
        self.pinned = pin(self.proc.pid, 1) and pin(os.getpid(), 0)
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if "listening on " in line:
                self.url = line.rsplit("listening on ", 1)[1].strip()
                return self.url
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(1)  # its stdout closed: it is exiting (stop() shows why)
        self.stop()
        raise RuntimeError("the identity provider did not start")

    @property
    def token_url(self) -> str:
        return self.url + "/oauth/token"

    @property
    def resource_url(self) -> str:
        return self.url + "/api/resource"

    def stop(self) -> None:
        import processes

        if self.proc is not None:
            status = self.proc.poll()
            if status is None:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            elif status > 0 and status != 130 and self.stderr is not None:  # it died on its own
                self.stderr.seek(0)
                processes.show_failure("the identity provider", status, self.stderr.read())
            processes.untrack(self.proc)
        if self.stderr is not None:
            self.stderr.close()
        self.proc = None
        self.stderr = None


class Admin:
    """The IdP's /_admin/ endpoints over one keep-alive connection (opened before resets)."""

    def __init__(self, base_url: str) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=60)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self._http.request(method, path, **kwargs)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def reset(self) -> float:
        """Zero the counters, clear faults; returns the IdP's clock at that moment."""
        return float((await self._call("POST", "/_admin/reset"))["now"])

    async def stats(self, *, records: bool = False) -> dict[str, Any]:
        return await self._call("GET", "/_admin/stats", params={"records": int(records)})

    async def fault(self, count: int = 1, **fault: Any) -> None:
        await self._call("POST", "/_admin/fault", json={**fault, "count": count})

    async def resource_latency(self, seconds: float) -> None:
        """Make the protected resource answer after `seconds` (a remote API's latency)."""
        await self._call("POST", "/_admin/resource", json={"latency": seconds})

    async def add_clients(self, ids: list[str], *, lifetime: float | None = None) -> None:
        for start in range(0, len(ids), CLIENT_BATCH):
            batch = [
                {"client_id": cid, "secret": SECRET, "token_lifetime": lifetime}
                for cid in ids[start : start + CLIENT_BATCH]
            ]
            await self._call("POST", "/_admin/clients", json={"clients": batch})
