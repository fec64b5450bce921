#!/usr/bin/env python3
"""Validate deploy/k8s offline: render every overlay, check every object against the Kubernetes
JSON schemas, and assert the deployment's security and availability settings.

Run through `make k8s-validate` (scripts/k8s-validate.sh), which provides a virtualenv with
kubernetes-validate (the PyPI package that bundles the schemas) and PyYAML.

1. Rendering: `kubectl kustomize` (kustomize v4 or later), else `kustomize build`. Without either
   the run fails: a manifest nobody rendered with the real tool is not validated.
2. Schemas: every rendered object, and secret.example.yaml, validates in strict mode (unknown
   fields are errors) against the oldest Kubernetes version supported here (1.30: the preStop
   `sleep` action) and the newest the package bundles.
3. Assertions on every workload and on the whole (see the checks below).

Prints one line per failure, a summary per overlay and ends with `k8s-validate: N passed, N failed`.

`--self-test` proves the policy checks can fail: it applies each mutation in
tools/failing-fixtures.yaml to the rendered prod overlay, expects the named check to fail, and
fails itself if any policy check (a `report.check` call in `check_workload` or `check_overlay`)
is made to fail by no fixture.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
K8S = HERE.parent
sys.dont_write_bytecode = True  # no __pycache__ in the source tree

OVERLAYS = ["dev", "prod"]
MIN_VERSION = "1.30.0"
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}
GATEWAY = {"app.kubernetes.io/name": "infergate", "app.kubernetes.io/component": "gateway"}
KEY_ADMIN = {"app.kubernetes.io/name": "infergate", "app.kubernetes.io/component": "key-admin"}
REDIS = {"app.kubernetes.io/name": "infergate", "app.kubernetes.io/component": "redis"}
UPSTREAM = {"app.kubernetes.io/component": "upstream"}


class Report:
    def __init__(self, quiet: bool = False) -> None:
        self.passed = 0
        self.failed = 0
        self.failures: list[str] = []
        self.quiet = quiet
        # (function, line) of every check that failed: the self-test's coverage of the checks.
        self.failed_at: set[tuple[str, int]] = set()

    def check(self, cond: bool, what: str) -> bool:
        if cond:
            self.passed += 1
        else:
            self.failed += 1
            self.failures.append(what)
            caller = sys._getframe(1)
            self.failed_at.add((caller.f_code.co_name, caller.f_lineno))
            if not self.quiet:
                print(f"FAIL {what}", flush=True)
        return bool(cond)


# ---------------------------------------------------------------------------------------------
# rendering


def external_renderer() -> tuple[str, list[str]] | None:
    if shutil.which("kubectl"):
        r = subprocess.run(["kubectl", "version", "--client", "-o", "json"], capture_output=True, text=True)
        if r.returncode == 0:
            try:
                kv = json.loads(r.stdout).get("kustomizeVersion", "")
            except ValueError:
                kv = ""
            m = re.match(r"v(\d+)", kv)
            # kustomize < v4 (kubectl < 1.21) lacks the `patches:` field.
            if m and int(m.group(1)) >= 4:
                return f"kubectl kustomize ({kv})", ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return "kustomize build", ["kustomize", "build"]
    return None


def render(overlay: Path, renderer) -> list[dict]:
    name, cmd = renderer
    r = subprocess.run(cmd + [str(overlay)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RenderError(f"{name} failed: {r.stderr.strip()[:500]}")
    return [d for d in yaml.safe_load_all(r.stdout) if d is not None]


class RenderError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# schemas


def schema_versions() -> list[str]:
    import kubernetes_validate.utils as kvu

    # Each validation would otherwise re-read a 1.3 MB definitions file.
    if not hasattr(kvu.schema_contents, "cache_info"):
        kvu.schema_contents = functools.lru_cache(maxsize=None)(kvu.schema_contents)
    latest = kvu.latest_version()
    return [MIN_VERSION] if latest == MIN_VERSION else [MIN_VERSION, latest]


def validate_schema(objects: list[dict], label: str, report: Report) -> None:
    import kubernetes_validate

    for version in schema_versions():
        for o in objects:
            ident = f"{o.get('kind')}/{(o.get('metadata') or {}).get('name')}"
            try:
                kubernetes_validate.validate(o, version, strict=True)
                ok, why = True, ""
            except Exception as e:  # ValidationError, SchemaNotFoundError, …
                ok, why = False, getattr(e, "message", str(e))
                path = "/".join(str(p) for p in getattr(e, "absolute_path", []) or [])
                why = f"{path}: {why}" if path else why
            report.check(ok, f"{label}: {ident} validates against the Kubernetes {version} schema: {why}")


# ---------------------------------------------------------------------------------------------
# assertions


def matches(selector: dict | None, labels: dict) -> bool:
    """A podSelector / labelSelector against a label set (matchLabels and matchExpressions In/Exists)."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, vals = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(key) not in vals:
            return False
        if op == "NotIn" and labels.get(key) in vals:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def pod_spec(w: dict) -> dict:
    return ((w.get("spec") or {}).get("template") or {}).get("spec") or {}


def pod_labels(w: dict) -> dict:
    return (((w.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}


def find(objects, kind, name):
    for o in objects:
        if o.get("kind") == kind and (o.get("metadata") or {}).get("name") == name:
            return o
    return None


def check_workload(w: dict, label: str, report: Report) -> None:
    name = f"{label}: {w['kind']}/{w['metadata']['name']}"
    spec = pod_spec(w)
    psc = spec.get("securityContext") or {}
    report.check(spec.get("automountServiceAccountToken") is False, f"{name}: automountServiceAccountToken: false")
    report.check(not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"),
                 f"{name}: no host namespaces")
    report.check(not any("hostPath" in v for v in spec.get("volumes") or []), f"{name}: no hostPath volumes")
    report.check((psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
                 f"{name}: pod seccompProfile RuntimeDefault")
    report.check("terminationGracePeriodSeconds" in spec, f"{name}: terminationGracePeriodSeconds set")
    containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
    report.check(bool(containers), f"{name}: has containers")
    for c in containers:
        cn = f"{name} container {c.get('name')}"
        sc = c.get("securityContext") or {}
        non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        uid = sc.get("runAsUser", psc.get("runAsUser"))
        report.check(non_root is True, f"{cn}: runAsNonRoot")
        report.check(uid is None or uid != 0, f"{cn}: runAsUser is not 0")
        report.check(sc.get("readOnlyRootFilesystem") is True, f"{cn}: readOnlyRootFilesystem")
        report.check(sc.get("allowPrivilegeEscalation") is False, f"{cn}: allowPrivilegeEscalation: false")
        report.check(sc.get("privileged") is not True, f"{cn}: not privileged")
        caps = sc.get("capabilities") or {}
        report.check("ALL" in (caps.get("drop") or []), f"{cn}: drops ALL capabilities")
        report.check(not caps.get("add"), f"{cn}: adds no capabilities")
        res = c.get("resources") or {}
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                report.check(r in (res.get(kind) or {}), f"{cn}: resources.{kind}.{r}")
        report.check(":" in c.get("image", "").rsplit("/", 1)[-1] or "@" in c.get("image", ""),
                     f"{cn}: image has an explicit tag ({c.get('image')})")
        if c in (spec.get("containers") or []):
            report.check("readinessProbe" in c and "livenessProbe" in c, f"{cn}: readiness and liveness probes")


def probe_path(c: dict, probe: str) -> str | None:
    return ((c.get(probe) or {}).get("httpGet") or {}).get("path")


def probe_host(c: dict, probe: str) -> str | None:
    for h in ((c.get(probe) or {}).get("httpGet") or {}).get("httpHeaders") or []:
        if h.get("name", "").lower() == "host":
            return h.get("value")
    return None


def pre_stop_seconds(c: dict) -> int:
    return int((((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds") or 0)


def ingress_peers(objects, labels: dict, ns: str):
    """Ingress peers allowed to reach pods with `labels` in `ns`: a list of peer dicts, or None
    for "anyone" (a rule without `from`), or [] when only denies apply."""
    peers = []
    for p in objects:
        if p.get("kind") != "NetworkPolicy" or p["metadata"].get("namespace") != ns:
            continue
        s = p.get("spec") or {}
        if not matches(s.get("podSelector"), labels):
            continue
        if "Ingress" not in (s.get("policyTypes") or ["Ingress"]):
            continue
        for rule in s.get("ingress") or []:
            if not rule.get("from"):
                return None
            peers.extend(rule["from"])
    return peers


def egress_targets(objects, labels: dict, ns: str) -> list[dict] | None:
    targets = []
    for p in objects:
        if p.get("kind") != "NetworkPolicy" or p["metadata"].get("namespace") != ns:
            continue
        s = p.get("spec") or {}
        if not matches(s.get("podSelector"), labels) or "Egress" not in (s.get("policyTypes") or []):
            continue
        for rule in s.get("egress") or []:
            if not rule.get("to"):
                return None
            targets.extend(rule["to"])
    return targets


def peer_is(peer: dict, labels: dict, ns: str, own_ns: str) -> bool:
    """Does this NetworkPolicy peer select exactly pods labelled like `labels` in namespace `ns`?"""
    if "ipBlock" in peer:
        return False
    nsel = peer.get("namespaceSelector")
    if nsel is None:
        in_ns = own_ns == ns
    else:
        in_ns = matches(nsel, {"kubernetes.io/metadata.name": ns}) and bool(nsel.get("matchLabels") or nsel.get("matchExpressions"))
    psel = peer.get("podSelector")
    return in_ns and psel is not None and bool(psel.get("matchLabels")) and matches(psel, labels)


def check_overlay(name: str, objects: list[dict], report: Report) -> None:
    label = name
    ns = "infergate"
    report.check(find(objects, "Namespace", ns) is not None, f"{label}: Namespace {ns}")
    nsobj = find(objects, "Namespace", ns) or {}
    report.check((nsobj.get("metadata", {}).get("labels") or {}).get("pod-security.kubernetes.io/enforce") == "restricted",
                 f"{label}: namespace enforces the restricted Pod Security Standard")
    cm = find(objects, "ConfigMap", "infergate-config") or {}
    env = cm.get("data") or {}
    report.check(bool(env), f"{label}: ConfigMap infergate-config")
    for secret in (o for o in objects if o.get("kind") == "Secret"):
        report.check(False, f"{label}: no Secret is rendered (secrets are applied out of band): {secret['metadata']['name']}")

    workloads = [o for o in objects if o.get("kind") in WORKLOAD_KINDS]
    for w in workloads:
        check_workload(w, label, report)

    # --- gateway
    gw = find(objects, "Deployment", "infergate-gateway")
    if report.check(gw is not None, f"{label}: Deployment infergate-gateway"):
        spec = pod_spec(gw)
        c = next((c for c in spec.get("containers", []) if c.get("name") == "gateway"), {})
        report.check((gw["spec"].get("replicas") or 1) >= 2, f"{label}: gateway has at least 2 replicas")
        report.check(probe_path(c, "readinessProbe") == "/health/ready", f"{label}: gateway readiness probe on /health/ready")
        report.check(probe_path(c, "livenessProbe") == "/health", f"{label}: gateway liveness probe on /health")
        hosts = [h.strip() for h in env.get("TRUSTED_HOSTS", "").split(",")]
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe in c:
                report.check(probe_host(c, probe) in hosts, f"{label}: gateway {probe} sends a Host from TRUSTED_HOSTS")
        drain = int(env.get("INFERGATE_SHUTDOWN_TIMEOUT_SECONDS", "30"))
        grace = spec.get("terminationGracePeriodSeconds", 30)
        report.check(grace > drain + pre_stop_seconds(c),
                     f"{label}: gateway terminationGracePeriodSeconds ({grace}) > preStop ({pre_stop_seconds(c)}) + drain ({drain})")
        tsc = spec.get("topologySpreadConstraints") or []
        report.check(any(t.get("topologyKey") == "kubernetes.io/hostname" and matches(t.get("labelSelector"), pod_labels(gw)) for t in tsc),
                     f"{label}: gateway replicas spread over nodes (topologySpreadConstraints)")
        report.check(matches(gw["spec"].get("selector"), pod_labels(gw)) and matches({"matchLabels": GATEWAY}, pod_labels(gw)),
                     f"{label}: gateway selector matches its pods")
        hpa = next((o for o in objects if o.get("kind") == "HorizontalPodAutoscaler"
                    and (o["spec"].get("scaleTargetRef") or {}).get("name") == "infergate-gateway"), None)
        if report.check(hpa is not None, f"{label}: HorizontalPodAutoscaler for the gateway"):
            mn, mx = hpa["spec"].get("minReplicas", 1), hpa["spec"].get("maxReplicas", 0)
            report.check(mn >= 2 and mx >= mn, f"{label}: HPA min {mn} >= 2 and max {mx} >= min")
            report.check(mn == gw["spec"].get("replicas"), f"{label}: Deployment replicas equal the HPA's minReplicas")
            report.check(env.get("RATE_LIMIT_EXPECTED_REPLICAS") == str(mn),
                         f"{label}: RATE_LIMIT_EXPECTED_REPLICAS ({env.get('RATE_LIMIT_EXPECTED_REPLICAS')}) is the HPA's minReplicas ({mn})")
        pdb = next((o for o in objects if o.get("kind") == "PodDisruptionBudget"
                    and matches(o["spec"].get("selector"), pod_labels(gw))), None)
        if report.check(pdb is not None, f"{label}: PodDisruptionBudget for the gateway"):
            s = pdb["spec"]
            report.check(s.get("maxUnavailable") == 1 or (s.get("minAvailable") or 0) >= 1,
                         f"{label}: the PDB keeps a gateway up")
        svc = find(objects, "Service", "infergate-gateway")
        report.check(svc is not None and matches({"matchLabels": svc["spec"].get("selector")}, pod_labels(gw)),
                     f"{label}: Service infergate-gateway selects the gateway pods")

    # --- key-admin
    ka = find(objects, "Deployment", "infergate-key-admin")
    if report.check(ka is not None, f"{label}: Deployment infergate-key-admin"):
        spec = pod_spec(ka)
        c = spec["containers"][0]
        report.check(ka["spec"].get("replicas") == 1, f"{label}: key-admin has 1 replica")
        report.check(probe_path(c, "readinessProbe") == "/health" and probe_path(c, "livenessProbe") == "/health",
                     f"{label}: key-admin probes on /health")
        drain = int(env.get("INFERGATE_ADMIN_SHUTDOWN_TIMEOUT_SECONDS", "30"))
        grace = spec.get("terminationGracePeriodSeconds", 30)
        report.check(grace > drain + pre_stop_seconds(c), f"{label}: key-admin terminationGracePeriodSeconds ({grace}) > drain")
        for svc in (o for o in objects if o.get("kind") == "Service" and matches({"matchLabels": o["spec"].get("selector")}, pod_labels(ka))):
            report.check(svc["spec"].get("type", "ClusterIP") == "ClusterIP",
                         f"{label}: key-admin Service {svc['metadata']['name']} is ClusterIP (not exposed)")
        for ing in (o for o in objects if o.get("kind") == "Ingress"):
            backends = json.dumps(ing.get("spec"))
            report.check("infergate-key-admin" not in backends, f"{label}: Ingress {ing['metadata']['name']} does not route to key-admin")

    # --- Redis
    rs = find(objects, "StatefulSet", "infergate-redis")
    if report.check(rs is not None, f"{label}: StatefulSet infergate-redis"):
        vct = [v["metadata"]["name"] for v in rs["spec"].get("volumeClaimTemplates") or []]
        c = pod_spec(rs)["containers"][0]
        mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts") or []}
        report.check("data" in vct and mounts.get("data") == "/data", f"{label}: Redis keeps /data on a PersistentVolumeClaim")
        args = " ".join(c.get("args") or c.get("command") or [])
        report.check("--appendonly yes" in args, f"{label}: Redis persists with the append-only file")
        report.check("--maxmemory-policy noeviction" in args, f"{label}: Redis never evicts (key records)")

    # --- NetworkPolicies
    pols = [o for o in objects if o.get("kind") == "NetworkPolicy"]
    report.check(any(p["metadata"].get("namespace") == ns and p["spec"].get("podSelector") == {}
                     and set(p["spec"].get("policyTypes") or []) == {"Ingress", "Egress"}
                     and not p["spec"].get("ingress") and not p["spec"].get("egress") for p in pols),
                 f"{label}: default-deny NetworkPolicy (ingress and egress)")
    redis_peers = ingress_peers(objects, REDIS, ns)
    report.check(redis_peers is not None and bool(redis_peers)
                 and all(peer_is(p, GATEWAY, ns, ns) or peer_is(p, KEY_ADMIN, ns, ns) for p in redis_peers),
                 f"{label}: only the gateway and key-admin may reach Redis ({redis_peers})")
    up_peers = ingress_peers(objects, {"app.kubernetes.io/name": "infergate", **UPSTREAM}, ns)
    report.check(up_peers is not None and bool(up_peers) and all(peer_is(p, GATEWAY, ns, ns) for p in up_peers),
                 f"{label}: only the gateway may reach the in-namespace upstream ({up_peers})")
    ka_peers = ingress_peers(objects, KEY_ADMIN, ns)
    report.check(ka_peers is not None and all("ipBlock" not in p and "namespaceSelector" not in p
                                              and not matches(p.get("podSelector"), GATEWAY) for p in ka_peers),
                 f"{label}: key-admin is reachable only from labelled pods in its namespace ({ka_peers})")
    for w in workloads:
        labels = pod_labels(w)
        targets = egress_targets(objects, labels, ns)
        reaches_up = targets is None or any(matches(t.get("podSelector"), UPSTREAM) for t in targets)
        reaches_redis = targets is None or any(matches(t.get("podSelector"), REDIS) for t in targets)
        wn = f"{w['kind']}/{w['metadata']['name']}"
        if matches({"matchLabels": GATEWAY}, labels):
            report.check(targets is not None and reaches_up and reaches_redis, f"{label}: the gateway may reach the upstream and Redis")
        else:
            report.check(not reaches_up, f"{label}: {wn} may not reach the upstream")
            if not matches({"matchLabels": KEY_ADMIN}, labels):
                report.check(not reaches_redis or matches({"matchLabels": REDIS}, labels),
                             f"{label}: {wn} may not reach Redis")
    for p in pols:
        if p["metadata"].get("namespace") not in (ns, None):
            s = p["spec"]
            peers = [peer for rule in s.get("ingress") or [] for peer in rule.get("from") or []]
            report.check(bool(peers) and all(peer_is(pr, GATEWAY, ns, p["metadata"]["namespace"]) for pr in peers),
                         f"{label}: {p['metadata']['namespace']}/{p['metadata']['name']} admits only the gateway")

    if name == "prod":
        for w in workloads:
            for c in pod_spec(w).get("containers") or []:
                report.check(not c["image"].endswith(":latest") and not c["image"].endswith(":local"),
                             f"{label}: {c['name']} image is pinned ({c['image']})")


def check_secret_template(rendered: dict[str, list[dict]], report: Report) -> None:
    docs = [d for d in yaml.safe_load_all((K8S / "secret.example.yaml").read_text()) if d is not None]
    report.check(len(docs) == 1 and docs[0].get("kind") == "Secret", "secret.example.yaml holds one Secret")
    s = docs[0]
    validate_schema(docs, "secret.example.yaml", report)
    data = s.get("stringData") or {}
    for key in ("admin-api-key", "jwt-private-key.pem", "jwt-public-key.pem"):
        report.check(key in data, f"secret.example.yaml: has {key}")
    report.check(all("REPLACE" in str(v) for v in data.values()) and not s.get("data"),
                 "secret.example.yaml: placeholders only, no secret committed")
    # scripts/k8s-secrets.sh fills the same template.
    script = K8S.parent.parent / "scripts" / "k8s-secrets.sh"
    if shutil.which("openssl") and script.is_file():
        r = subprocess.run([str(script)], capture_output=True, text=True, timeout=60)
        made = yaml.safe_load(r.stdout) if r.returncode == 0 else None
        if report.check(isinstance(made, dict), f"scripts/k8s-secrets.sh prints a Secret ({r.stderr.strip()[:200]})"):
            validate_schema([made], "scripts/k8s-secrets.sh", report)
            got = made.get("stringData") or {}
            report.check(set(got) == set(data) and (made.get("metadata") or {}).get("name") == s["metadata"]["name"],
                         "scripts/k8s-secrets.sh: same name and keys as the template")
            report.check(len(got.get("admin-api-key", "")) >= 16
                         and "BEGIN PRIVATE KEY" in got.get("jwt-private-key.pem", "")
                         and "BEGIN PUBLIC KEY" in got.get("jwt-public-key.pem", ""),
                         "scripts/k8s-secrets.sh: a 16+ character admin key and a PEM key pair")
    # Every secret key the workloads mount exists in the template.
    for name, objects in rendered.items():
        for o in objects:
            if o.get("kind") not in WORKLOAD_KINDS:
                continue
            for v in pod_spec(o).get("volumes") or []:
                sec = v.get("secret")
                if sec and sec.get("secretName") == s["metadata"]["name"]:
                    for item in sec.get("items") or []:
                        report.check(item["key"] in data, f"{name}: mounted secret key {item['key']} is in the template")


# ---------------------------------------------------------------------------------------------
# self-test: every policy check can fail

POLICY_FUNCTIONS = ("check_workload", "check_overlay")


def policy_check_sites() -> set[tuple[str, int]]:
    """Every `report.check(...)` call in the policy functions, as (function, line)."""
    import ast

    tree = ast.parse(Path(__file__).read_text())
    sites = set()
    for fn in tree.body:
        if isinstance(fn, ast.FunctionDef) and fn.name in POLICY_FUNCTIONS:
            for node in ast.walk(fn):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "check"):
                    sites.add((fn.name, node.lineno))
    return sites


def parse_path(path) -> list:
    """`a.b[0].c` (or a YAML list of keys, for keys holding dots) into keys and indexes;
    `[name=x]` selects the list item whose `name` is x."""
    if isinstance(path, list):
        return path
    out: list = []
    for part in path.split("."):
        for m in re.finditer(r"([^\[\]]+)|\[([^\]]+)\]", part):
            key, idx = m.groups()
            if key is not None:
                out.append(key)
            elif "=" in idx:
                out.append(tuple(idx.split("=", 1)))
            else:
                out.append(int(idx))
    return out


def step(node, key):
    if isinstance(key, tuple):
        field, value = key
        return next(i for i, item in enumerate(node) if str(item.get(field)) == value)
    return key


def apply_mutation(objects: list[dict], m: dict) -> list[dict]:
    if "add" in m:
        return objects + [m["add"]]
    kind, name = m["object"].split("/", 1)
    target = find(objects, kind, name)
    if target is None:
        raise KeyError(f"fixture names a missing object {m['object']}")
    if m.get("drop"):
        return [o for o in objects if o is not target]
    keys = parse_path(m["path"])
    node = target
    for key in keys[:-1]:
        k = step(node, key)
        if isinstance(node, dict) and k not in node:
            node[k] = {}
        node = node[k]
    last = step(node, keys[-1])
    if "value" in m:
        node[last] = m["value"]
    else:
        del node[last]
    return objects


def self_test() -> int:
    import copy

    renderer = external_renderer()
    if renderer is None:
        print("k8s-validate --self-test: kubectl kustomize is not installed", file=sys.stderr)
        return 1
    base = render(K8S / "overlays" / "prod", renderer)
    clean = Report(quiet=True)
    check_overlay("prod", copy.deepcopy(base), clean)
    problems = [f"the unmutated prod overlay fails: {clean.failures}"] if clean.failed else []
    fixtures = yaml.safe_load((HERE / "failing-fixtures.yaml").read_text())
    covered: set[tuple[str, int]] = set()
    for fx in fixtures:
        objects = copy.deepcopy(base)
        try:
            for m in fx["mutate"]:
                objects = apply_mutation(objects, m)
        except (KeyError, IndexError, StopIteration, TypeError) as e:
            problems.append(f"fixture {fx['fails']!r}: cannot apply ({e!r})")
            continue
        report = Report(quiet=True)
        check_overlay("prod", objects, report)
        covered |= report.failed_at
        if not any(fx["fails"] in f for f in report.failures):
            problems.append(f"fixture {fx['fails']!r}: that check did not fail (failures: {report.failures})")
    for fn, line in sorted(policy_check_sites() - covered):
        problems.append(f"no fixture makes the check at validate.py:{line} ({fn}) fail")
    for p in problems:
        print(f"FAIL {p}", flush=True)
    print(f"k8s-validate --self-test: {len(fixtures)} failing fixtures, "
          f"{len(covered & policy_check_sites())} of {len(policy_check_sites())} policy checks shown to fail; "
          f"{len(problems)} problems", flush=True)
    return 1 if problems else 0


def main() -> int:
    if "--self-test" in sys.argv[1:]:
        return self_test()
    report = Report()
    renderer = external_renderer()
    if renderer is None:
        print("k8s-validate: neither `kubectl kustomize` (kustomize v4+) nor `kustomize` is installed; "
              ".ci/run installs kubectl", file=sys.stderr)
        return 1
    rendered: dict[str, list[dict]] = {}
    for name in OVERLAYS:
        overlay = K8S / "overlays" / name
        before = report.failed
        try:
            objects = render(overlay, renderer)
        except RenderError as e:
            report.check(False, f"{name}: renders ({e})")
            continue
        rendered[name] = objects
        validate_schema(objects, name, report)
        check_overlay(name, objects, report)
        kinds = {}
        for o in objects:
            kinds[o["kind"]] = kinds.get(o["kind"], 0) + 1
        print(f"overlay {name}: {len(objects)} objects rendered by {renderer[0]} "
              f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}); "
              f"{'ok' if report.failed == before else f'{report.failed - before} failed'}", flush=True)
    check_secret_template(rendered, report)
    print(f"schemas: Kubernetes {', '.join(schema_versions())} (kubernetes-validate, strict)", flush=True)
    print(f"k8s-validate: {report.passed} passed, {report.failed} failed", flush=True)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
