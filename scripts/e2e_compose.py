#!/usr/bin/env python3
"""End-to-end test of the docker-compose stack (deploy/compose), driven from outside.

Run by `make e2e` (scripts/e2e.sh) after scripts/build-local-images.sh. Standard library only.

It brings the stack up under its own compose project, with the gateways and key-admin published
on free loopback ports and throwaway secrets, then, from the host, only through those ports:

  0. checks the containers (healthy, non-root, read-only, published on loopback only), that the
     mounted gateway.yaml is in effect, and the network isolation between the services;
  1. mints a key through key-admin (with the admin key from the secret file) and calls
     inference through both gateway replicas (and a JWT from key-admin through one of them);
  2. the per-key limit holds across both replicas together (shared through Redis);
  3. revokes the key; both replicas refuse it within 1 s;
  4. stops the Redis container: both gateways keep serving, in their configured fallback
     (`local`: each replica enforces limit / replicas), and say "degraded" on /health/ready;
  5. starts Redis again: the stored keys survived, shared limits resume;
  6. stops one gateway replica: it drains and exits 0, the other keeps serving throughout.

Whatever happens, the stack is torn down (containers, networks, volumes) at the end, also on
failure or Ctrl-C; `--teardown` only tears down (scripts/e2e.sh calls it from its exit trap).
Every wait is a bounded loop with a deadline; nothing sleeps for a fixed time to wait for
readiness. Prints one line per check and ends with `e2e: N passed, N failed`.
"""

from __future__ import annotations

import http.client as httpc
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "deploy" / "compose" / "docker-compose.yml"
PROJECT = os.environ.get("E2E_PROJECT", "infergate-e2e")
TAG = os.environ.get("INFERGATE_TAG", "local")
PREFIX = os.environ.get("INFERGATE_IMAGE_PREFIX", "infergate")
REDIS_IMAGE = os.environ.get("E2E_REDIS_IMAGE", f"{PREFIX}/redis:{TAG}")
HOST = "127.0.0.1"  # the only address this test talks to

# The per-key limit used by the limit checks, and the replicas sharing it (infergate.env).
KEY_LIMIT = 20
REPLICAS = 2
LOCAL_SHARE = math.ceil(KEY_LIMIT / REPLICAS)

T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[e2e {time.monotonic() - T0:6.1f}s] {msg}", flush=True)


class Failed(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# compose


def compose_cmd() -> list[str]:
    for cmd in (["docker", "compose"], ["docker-compose"]):
        try:
            r = subprocess.run(cmd + ["version"], capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0:
            return cmd
    raise SystemExit("e2e: neither `docker compose` nor `docker-compose` is available")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Stack:
    def __init__(self, secrets_dir: Path, ports: dict[str, int] | None = None):
        self.cmd = compose_cmd() + ["-p", PROJECT, "-f", str(COMPOSE_FILE)]
        self.ports = ports or {}
        self.env = dict(os.environ)
        self.env.update(
            {
                "INFERGATE_TAG": TAG,
                "INFERGATE_IMAGE_PREFIX": PREFIX,
                "REDIS_IMAGE": REDIS_IMAGE,
                "INFERGATE_SECRETS_DIR": str(secrets_dir),
                "GATEWAY_ADDR": HOST,
                "KEY_ADMIN_ADDR": HOST,
                # docker-compose v1 prints an ANSI progress display otherwise
                "COMPOSE_INTERACTIVE_NO_CLI": "1",
            }
        )
        for name, port in self.ports.items():
            self.env[name] = str(port)

    def run(self, *args: str, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(
            self.cmd + list(args),
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and r.returncode != 0:
            raise Failed(f"compose {' '.join(args)} exited {r.returncode}: {r.stderr.strip()[-2000:]}")
        return r

    def container(self, service: str) -> str:
        cid = self.run("ps", "-q", service).stdout.strip()
        if not cid:
            raise Failed(f"no container for service {service}")
        return cid.splitlines()[0]

    def inspect(self, service: str, fmt: str) -> str:
        r = subprocess.run(
            ["docker", "inspect", "-f", fmt, self.container(service)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return r.stdout.strip()

    def down(self) -> None:
        r = self.run("down", "-v", "--remove-orphans", "--timeout", "10", timeout=180, check=False)
        if r.returncode != 0:
            log(f"teardown: compose down exited {r.returncode}: {r.stderr.strip()[-500:]}")


# ---------------------------------------------------------------------------------------------
# HTTP, loopback only


class Resp:
    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return None

    def __repr__(self) -> str:
        return f"{self.status} {self.body[:300]!r}"


def req(method: str, port: int, path: str, *, key: str | None = None, bearer: str | None = None,
         body=None, timeout: float = 5.0) -> Resp:
    """One request to 127.0.0.1:port. Connection errors come back as status 0."""
    headers = {"Host": f"{HOST}:{port}", "Connection": "close"}
    data = None
    if key:
        headers["X-API-Key"] = key
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn = httpc.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    except (OSError, httpc.HTTPException) as e:
        return Resp(0, {}, str(e).encode())
    finally:
        conn.close()


def wait_until(what: str, deadline_s: float, probe, interval: float = 0.2):
    """Call probe() until it returns a truthy value or the deadline passes (then Failed)."""
    end = time.monotonic() + deadline_s
    last = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= end:
            raise Failed(f"timed out after {deadline_s:.0f}s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# the test


class E2E:
    def __init__(self, stack: Stack, admin_key: str):
        self.stack = stack
        self.admin = admin_key
        self.g1 = stack.ports["GATEWAY_1_PORT"]
        self.g2 = stack.ports["GATEWAY_2_PORT"]
        self.ka = stack.ports["KEY_ADMIN_PORT"]
        self.passed = 0
        self.failed = 0
        self.timings: list[tuple[str, float]] = []

    # -- bookkeeping
    def check(self, cond: bool, what: str, detail: str = "") -> None:
        if cond:
            self.passed += 1
            log(f"ok   {what}")
        else:
            self.failed += 1
            log(f"FAIL {what}{': ' + detail if detail else ''}")
            raise Failed(what)

    def phase(self, name: str, fn) -> None:
        log(f"--- {name}")
        t = time.monotonic()
        try:
            fn()
        finally:
            self.timings.append((name, time.monotonic() - t))

    # -- helpers
    def mint(self, name: str, rate_limit: str | None = None) -> tuple[str, str]:
        body = {"name": name, "role": "user", "expires_in_days": 1}
        if rate_limit:
            body["rate_limit"] = rate_limit
        r = req("POST", self.ka, "/v1/keys", key=self.admin, body=body)
        if r.status != 201:
            raise Failed(f"minting {name} through key-admin: {r}")
        j = r.json()
        return j["key"], j["record"]["id"]

    def infer(self, port: int, key: str, prompt: str = "hello") -> Resp:
        return req("POST", port, "/inference", key=key, body={"prompt": prompt, "max_tokens": 8})

    def ready(self, port: int) -> dict | None:
        r = req("GET", port, "/health/ready")
        return r.json() if r.status == 200 else None

    # -- phases
    def up(self) -> None:
        self.stack.run("up", "-d", "--no-build", timeout=300)
        wait_until("key-admin /health", 90, lambda: req("GET", self.ka, "/health").status == 200)
        for name, port in (("gateway-1", self.g1), ("gateway-2", self.g2)):
            wait_until(f"{name} /health/ready", 90, lambda p=port: (self.ready(p) or {}).get("status") == "ready")
        self.check(True, "stack up: key-admin and both gateway replicas answer on loopback")
        for svc in ("redis", "key-admin", "dev-upstream", "gateway-1", "gateway-2"):
            wait_until(f"{svc} healthy (Docker healthcheck)", 90,
                       lambda s=svc: self.stack.inspect(s, "{{.State.Health.Status}}") == "healthy", 0.5)
        self.check(True, "every container reports healthy (image and compose healthchecks)")
        user = self.stack.inspect("gateway-1", "{{.Config.User}}")
        self.check(user == "10001:10001", "gateway runs as the non-root user 10001", user)
        ro = self.stack.inspect("gateway-1", "{{.HostConfig.ReadonlyRootfs}}")
        self.check(ro == "true", "gateway root filesystem is read-only", ro)

    def exec_curl(self, service: str, url: str) -> int:
        """curl run inside a container of the stack (private network); its exit code."""
        r = subprocess.run(["docker", "exec", self.stack.container(service), "curl", "-sS", "-o", "/dev/null",
                            "--max-time", "3", "-H", "Host: localhost", url],
                           capture_output=True, timeout=30)
        return r.returncode

    def isolation(self) -> None:
        for svc in ("key-admin", "gateway-1", "gateway-2"):
            b = json.loads(self.stack.inspect(svc, "{{json .HostConfig.PortBindings}}") or "{}")
            ips = {h.get("HostIp") for v in b.values() for h in v or []}
            self.check(ips == {HOST}, f"{svc} is published on {HOST} only", str(b))
        codes = [req("GET", self.g1, "/health/ready").status for _ in range(120)]
        self.check(set(codes) == {200}, "120 readiness checks in a row are never rate-limited (gateway.yaml is mounted)",
                   str(sorted(set(codes))))
        self.check(self.exec_curl("gateway-1", "http://dev-upstream:9000/health") == 0,
                   "gateway-1 reaches the dev upstream on the `models` network")
        # curl: 6 = name not resolved, 7 = connection refused, 28 = timed out
        rc = self.exec_curl("key-admin", "http://dev-upstream:9000/health")
        self.check(rc in (6, 7, 28), "key-admin cannot reach the dev upstream (only the gateways can)", f"curl exit {rc}")
        rc = self.exec_curl("dev-upstream", "http://redis:6379/")
        self.check(rc in (6, 7, 28), "the dev upstream cannot reach Redis (only the gateways and key-admin can)", f"curl exit {rc}")

    def mint_and_infer(self) -> None:
        r = req("GET", self.ka, "/v1/keys", key="wrong-admin-key-0000000000")
        self.check(r.status == 401, "key-admin refuses a wrong admin key", repr(r))
        self.key, self.key_id = self.mint("e2e-user")
        self.check(self.key.startswith("igk_"), "key-admin mints a key with the admin key from the secret file")
        for name, port in (("gateway-1", self.g1), ("gateway-2", self.g2)):
            r = self.infer(port, self.key, f"hello {name}")
            out = (r.json() or {}).get("output")
            self.check(r.status == 200 and out == f"echo: hello {name}",
                       f"inference through {name} with the new key", repr(r))
        r = req("POST", self.g2, "/v1/chat/completions", key=self.key,
                 body={"model": "echo-1", "messages": [{"role": "user", "content": "hi"}]})
        self.check(r.status == 200 and "choices" in (r.json() or {}), "chat completion through gateway-2", repr(r))
        r = req("POST", self.ka, "/v1/tokens", key=self.key)
        token = (r.json() or {}).get("token")
        self.check(r.status in (200, 201) and bool(token), "key-admin issues a JWT (signing key from the secret file)", repr(r))
        r = req("GET", self.g1, "/protected", bearer=token)
        self.check(r.status == 200 and (r.json() or {}).get("key_id") == self.key_id,
                   "gateway-1 accepts the JWT (public key from the secret file)", repr(r))
        r = self.infer(self.g1, "igk_notakey")
        self.check(r.status == 401, "a made-up key is refused", repr(r))

    def shared_limit(self, label: str) -> None:
        """The per-key limit is one budget for both replicas: gateway-1 alone may spend more than a
        replica's local share, and gateway-2 then gets only what is left."""
        key, _ = self.mint(f"e2e-limit-{label}", f"{KEY_LIMIT}/minute")
        first = LOCAL_SHARE + 4  # more than one replica's share in `local` fallback
        codes1 = [self.infer(self.g1, key).status for _ in range(first)]
        self.check(codes1 == [200] * first,
                   f"[{label}] gateway-1 allows {first} of the key's {KEY_LIMIT}/minute", str(codes1))
        codes2 = [self.infer(self.g2, key).status for _ in range(KEY_LIMIT - first + 3)]
        left = KEY_LIMIT - first
        self.check(codes2 == [200] * left + [429] * 3,
                   f"[{label}] gateway-2 allows only the remaining {KEY_LIMIT - first}, then 429", str(codes2))
        r = self.infer(self.g1, key)
        j = r.json() or {}
        self.check(r.status == 429 and j.get("dimension") == "key" and "retry-after" in r.headers,
                   f"[{label}] gateway-1 refuses too: {KEY_LIMIT} in all across both replicas", repr(r))

    def revoke(self) -> None:
        for port in (self.g1, self.g2):
            r = req("GET", port, "/protected", key=self.key)
            if r.status != 200:
                raise Failed(f"key should still work before the revocation: {r}")
        r = req("POST", self.ka, f"/v1/keys/{self.key_id}/revoke", key=self.admin)
        t_revoked = time.monotonic()
        self.check(r.status == 200 and (r.json() or {}).get("record", {}).get("state") == "revoked",
                   "key-admin revokes the key", repr(r))
        refused = {}
        end = t_revoked + 1.0
        while len(refused) < 2 and time.monotonic() < end:
            for name, port in (("gateway-1", self.g1), ("gateway-2", self.g2)):
                if name not in refused and req("GET", port, "/protected", key=self.key).status == 401:
                    refused[name] = time.monotonic() - t_revoked
            if len(refused) < 2:
                time.sleep(0.02)
        detail = ", ".join(f"{n} after {t * 1000:.0f} ms" for n, t in sorted(refused.items()))
        self.check(len(refused) == 2, f"both replicas refuse the revoked key within 1 s ({detail or 'none did'})",
                   f"refused: {detail or 'none'}")

    def redis_outage(self) -> None:
        # A key that both replicas have verified (cached) before Redis goes away.
        self.fkey, self.fid = self.mint("e2e-fallback", f"{KEY_LIMIT}/minute")
        unseen, _ = self.mint("e2e-unseen")  # never used before the outage
        for port in (self.g1, self.g2):
            if self.infer(port, self.fkey).status != 200:
                raise Failed("warm-up request failed")
        t = time.monotonic()
        self.stack.run("stop", "-t", "10", "redis")
        log(f"redis stopped in {time.monotonic() - t:.1f}s")
        for name, port in (("gateway-1", self.g1), ("gateway-2", self.g2)):
            def degraded(p=port):
                req("GET", p, "/health")  # goes through the limiter, so it notices
                j = self.ready(p) or {}
                return j if j.get("status") == "degraded" else None
            j = wait_until(f"{name} to report degraded", 15, degraded)
            mode = j.get("rate_limiter", {}).get("failure_mode")
            self.check(mode == "local", f"{name} /health/ready: 200 degraded, failure mode {mode}", json.dumps(j))
        codes = {name: self.infer(port, self.fkey).status for name, port in (("gateway-1", self.g1), ("gateway-2", self.g2))}
        self.check(codes == {"gateway-1": 200, "gateway-2": 200}, "both replicas keep serving with Redis down", str(codes))
        # `local` fallback: gateway-1 alone now enforces its share of the key's limit.
        codes1 = [self.infer(self.g1, self.fkey).status for _ in range(LOCAL_SHARE + 3)]
        allowed = 1 + codes1.count(200)  # + the request just above
        self.check(allowed == LOCAL_SHARE and codes1[-1] == 429 and 500 not in codes1,
                   f"gateway-1 enforces its local share ({LOCAL_SHARE} of {KEY_LIMIT}/minute) while Redis is down",
                   f"allowed {allowed}: {codes1}")
        r = self.infer(self.g2, self.fkey)
        self.check(r.status == 200, "gateway-2 keeps its own local share meanwhile", repr(r))
        r = self.infer(self.g2, unseen)
        self.check(r.status == 503, "a key no replica has verified yet cannot be checked: 503 (not 401, not 500)", repr(r))
        r = req("POST", self.ka, "/v1/keys", key=self.admin, body={"name": "e2e-during-outage", "role": "user"})
        self.check(r.status == 503, "key-admin answers 503 (not 500) while Redis is down", repr(r))

    def redis_back(self) -> None:
        t = time.monotonic()
        self.stack.run("start", "redis")
        wait_until("redis healthy again", 60, lambda: self.stack.inspect("redis", "{{.State.Health.Status}}") == "healthy", 0.3)
        log(f"redis healthy again after {time.monotonic() - t:.1f}s")
        for name, port in (("gateway-1", self.g1), ("gateway-2", self.g2)):
            def ready(p=port):
                req("GET", p, "/health")  # traffic lets the breaker probe Redis
                return (self.ready(p) or {}).get("status") == "ready"
            wait_until(f"{name} ready (shared limits) again", 20, ready)
            self.check(True, f"{name} /health/ready: ready again (breaker closed)")
        r = wait_until("key-admin to reach Redis again", 20,
                       lambda: (lambda r: r if r.status == 200 else None)(req("GET", self.ka, f"/v1/keys/{self.fid}", key=self.admin)))
        self.check((r.json() or {}).get("state") == "active", "the key minted before the outage survived the Redis restart (AOF)", repr(r))
        r = req("GET", self.ka, f"/v1/keys/{self.key_id}", key=self.admin)
        self.check((r.json() or {}).get("state") == "revoked", "so did the revocation", repr(r))
        self.shared_limit("after Redis restart")

    def stop_replica(self) -> None:
        stop_errors: list[str] = []
        served = [0]
        done = threading.Event()

        def hammer():
            while not done.is_set():
                r = self.infer(self.g1, self.key2, "still here")
                if r.status == 200:
                    served[0] += 1
                else:
                    stop_errors.append(repr(r))
                time.sleep(0.05)

        self.key2, _ = self.mint("e2e-failover")
        th = threading.Thread(target=hammer, daemon=True)
        th.start()
        try:
            t = time.monotonic()
            self.stack.run("stop", "-t", "40", "gateway-2", timeout=120)
            log(f"gateway-2 stopped in {time.monotonic() - t:.1f}s")
            after = served[0] + 10
            wait_until("10 more requests on gateway-1 after the stop", 10, lambda: served[0] >= after, 0.05)
        finally:
            done.set()
            th.join(10)
        code = self.stack.inspect("gateway-2", "{{.State.ExitCode}}")
        self.check(code == "0", "gateway-2 drained and exited 0 on SIGTERM", f"exit code {code}")
        r = req("GET", self.g2, "/health")
        self.check(r.status == 0, "gateway-2's port no longer answers", repr(r))
        self.check(not stop_errors and served[0] >= 10,
                   f"gateway-1 served all {served[0]} requests sent while gateway-2 stopped",
                   "; ".join(stop_errors[:5]))
        r = self.ready(self.g1) or {}
        self.check(r.get("status") == "ready", "gateway-1 /health/ready: ready", json.dumps(r))


def make_secrets(directory: Path) -> str:
    subprocess.run([str(ROOT / "scripts" / "compose-secrets.sh"), str(directory)], check=True,
                   capture_output=True, timeout=60)
    return (directory / "admin_api_key").read_text().strip()


def dump_diagnostics(stack: Stack) -> None:
    try:
        log("compose ps:")
        print(stack.run("ps", check=False, timeout=60).stdout, flush=True)
        logs = stack.run("logs", "--no-color", "--tail", "40", check=False, timeout=60).stdout
        log("last log lines of every service:")
        print(logs[-12000:], flush=True)
    except Exception as e:  # diagnostics must not hide the real failure
        log(f"(could not collect diagnostics: {e})")


def main() -> int:
    if "--teardown" in sys.argv:
        tmp = Path(tempfile.mkdtemp(prefix="infergate-e2e-td-"))
        try:
            (tmp / "admin_api_key").write_text("x")
            (tmp / "jwt_private_key.pem").write_text("x")
            (tmp / "jwt_public_key.pem").write_text("x")
            Stack(tmp).down()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return 0

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)

    secrets_dir = Path(tempfile.mkdtemp(prefix="infergate-e2e-secrets-"))
    ports = {"GATEWAY_1_PORT": free_port(), "GATEWAY_2_PORT": free_port(), "KEY_ADMIN_PORT": free_port()}
    while len(set(ports.values())) < 3:
        ports["GATEWAY_2_PORT"], ports["KEY_ADMIN_PORT"] = free_port(), free_port()
    admin_key = make_secrets(secrets_dir)
    stack = Stack(secrets_dir, ports)
    log(f"compose: {' '.join(stack.cmd)}")
    log(f"ports on {HOST}: gateway-1 {ports['GATEWAY_1_PORT']}, gateway-2 {ports['GATEWAY_2_PORT']}, "
        f"key-admin {ports['KEY_ADMIN_PORT']}; images {PREFIX}/*:{TAG}, {REDIS_IMAGE}")
    stack.down()  # leftovers of an interrupted run
    t = E2E(stack, admin_key)
    ok = False
    try:
        t.phase("up", t.up)
        t.phase("published ports, config file, network isolation", t.isolation)
        t.phase("mint a key, inference through both replicas", t.mint_and_infer)
        t.phase("per-key limit shared by both replicas", lambda: t.shared_limit("shared"))
        t.phase("revoke: both replicas refuse within 1 s", t.revoke)
        t.phase("Redis stopped: fallback", t.redis_outage)
        t.phase("Redis started: shared limits resume", t.redis_back)
        t.phase("one gateway replica stopped: the other keeps serving", t.stop_replica)
        ok = True
    except Failed as e:
        if t.failed == 0:  # a setup step failed, not a check
            t.failed += 1
            log(f"FAIL {e}")
        dump_diagnostics(stack)
    except KeyboardInterrupt as e:
        t.failed += 1
        log(f"interrupted ({e})")
    finally:
        td = time.monotonic()
        stack.down()
        t.timings.append(("teardown", time.monotonic() - td))
        shutil.rmtree(secrets_dir, ignore_errors=True)
    log("timings: " + ", ".join(f"{n}: {s:.1f}s" for n, s in t.timings))
    images = os.environ.get("E2E_IMAGES_SECONDS")
    total = time.monotonic() - T0
    log(f"total: stack test {total:.0f}s" + (f", images {images}s, make e2e {total + int(images):.0f}s" if images else ""))
    print(f"e2e: {t.passed} passed, {t.failed} failed", flush=True)
    return 0 if ok and t.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
