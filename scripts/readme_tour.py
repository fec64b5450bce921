#!/usr/bin/env python3
"""Keeps the README's tour true: runs its commands against `make run`'s stack and compares what
each prints with what the README shows under it.

`make tour` (part of `make test`): starts scripts/run.sh, takes the demo keys from its banner,
then runs every ```sh block of the "Five-minute tour" section in order, in one shell state
(variables a block sets are seen by the next), and checks each `# ` line shown under a command:

- `HTTP/1.1 NNN …`: the status;
- a JSON line (`{…}`, `[…]`, possibly continued on the next `#  ` lines, `…` eliding parts):
  every field name it shows exists in the output's JSON, and every value it shows in full
  (strings without `…`, numbers) is the output's, except ids, keys, times and waits;
- `name: value`: the header exists; its value matches unless it is a time, a wait or an id;
- `data: …`: a server-sent event of that shape arrived;
- a Prometheus sample: the series exists (not its count);
- anything else: the text appears in the output.

`# (…)` asides after two spaces are explanations, not output. `export NAME=…  # "field" above`
takes `field` from the previous command's JSON, as the reader would copy it. A block preceded by
`<!-- tour: skip (reason) -->` is not run (it restarts the stack, or writes fixed ids). The
"API docs" step (open the pages in a browser) is done by Chromium, headless.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")

VOLATILE_KEYS = {
    "timestamp", "request_id", "key", "key_id", "id", "created_at", "created_by", "expires_at",
    "revoked_at", "retry_after", "token", "jti", "sub", "iat", "exp", "nbf", "target", "actor",
    "new_key_id", "rotated_to", "uptime_seconds", "at",
}
VOLATILE_HEADERS = {
    "date", "x-ratelimit-reset", "retry-after", "x-process-time", "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens", "x-request-id",
}


def tour_blocks():
    text = open(README, encoding="utf-8").read()
    start = text.index("## Five-minute tour")
    end = text.find("\n## ", start + 10)
    section = text[start:end if end > 0 else len(text)]
    blocks = []
    skip = False
    lines = section.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<!-- tour: skip" in line:
            skip = True
        if line.strip() == "```sh":
            body = []
            i += 1
            while lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            if not skip:
                blocks.append(body)
            skip = False
        elif line.startswith("### "):
            skip = False
        i += 1
    return blocks


def steps(body):
    """(command lines, expected lines) pairs: a command, then the `# ` lines shown under it."""
    out, cmd, exp = [], [], []
    for line in body:
        if line.startswith("#"):
            text = line[1:]
            text = text[1:] if text.startswith(" ") else text
            if exp and text.startswith(" ") and exp[-1].lstrip().startswith(("{", "[")):
                exp[-1] += text.strip()  # a JSON line continued
            else:
                exp.append(text)
        elif line.strip():
            if exp:
                out.append((cmd, exp))
                cmd, exp = [], []
            cmd.append(line)
        else:
            if cmd or exp:
                out.append((cmd, exp))
            cmd, exp = [], []
    if cmd or exp:
        out.append((cmd, exp))
    return out


def strip_aside(s):
    return re.sub(r"\s{2,}\(.*\)\s*$", "", s).rstrip()


def json_fields(text):
    """Field names and fully shown scalar values of a JSON line with `…` elisions."""
    names = set(re.findall(r'"([A-Za-z_][\w-]*)":', text))
    values = {}
    for k, v in re.findall(r'"([A-Za-z_][\w-]*)":("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?)', text):
        if k in VOLATILE_KEYS or "…" in v:
            continue
        values.setdefault(k, set()).add(json.loads(v))
    return names, values


def walk(v, names, values):
    if isinstance(v, dict):
        for k, x in v.items():
            names.add(k)
            if not isinstance(x, (dict, list)):
                values.setdefault(k, set()).add(json.dumps(x))
            walk(x, names, values)
    elif isinstance(v, list):
        for x in v:
            walk(x, names, values)


def actual_json(output):
    """The last JSON object or array the output holds (several curls print theirs back to back)."""
    decoder = json.JSONDecoder()
    last, i = None, 0
    while True:
        starts = [j for j in (output.find("{", i), output.find("[", i)) if j >= 0]
        if not starts:
            return last
        j = min(starts)
        try:
            value, end = decoder.raw_decode(output, j)
            last, i = value, end
        except ValueError:
            i = j + 1


def check(expected, output):
    """Problems with one expected line against a command's output."""
    e = strip_aside(expected)
    if not e or e == "…":
        return []
    lines = [l.rstrip("\r") for l in output.splitlines()]
    m = re.match(r"HTTP/1\.1 (\d{3})", e)
    if m:
        ok = any(re.match(r"HTTP/1\.1 " + m.group(1), l) for l in lines)
        return [] if ok else [f"status {m.group(1)} expected; got {[l for l in lines if l.startswith('HTTP/')]}"]
    if e.startswith("data: "):
        events = [l[6:] for l in lines if l.startswith("data: ")]
        if e == "data: [DONE]":
            return [] if "[DONE]" in events else ["no `data: [DONE]` event"]
        names, _ = json_fields(e)
        for ev in events:
            try:
                got = set()
                walk(json.loads(ev), got, {})
            except ValueError:
                continue
            if names <= got:
                return []
        return [f"no event with the fields {sorted(names)}"]
    if e.startswith(("{", "[")):
        names, values = json_fields(e)
        got = actual_json(output)
        if got is None:
            return [f"no JSON in the output for: {e[:80]}"]
        got_names, got_values = set(), {}
        walk(got, got_names, got_values)
        problems = [f"field {n!r} missing" for n in sorted(names - got_names)]
        for k, vs in values.items():
            for v in vs:
                if json.dumps(v) not in got_values.get(k, set()):
                    problems.append(f"{k}: README shows {v!r}, got {sorted(got_values.get(k, set()))}")
        return problems
    m = re.match(r"^([A-Za-z][\w-]*): (.*)$", e)
    if m and not e.startswith(("infergate-", "exit ")):
        name, value = m.group(1).lower(), m.group(2)
        found = [l.split(":", 1)[1].strip() for l in lines if l.lower().startswith(name + ":")]
        if not found:
            return [f"header {name} missing"]
        if name in VOLATILE_HEADERS:
            return []
        mask = (lambda s: re.sub(r";t=\d+", ";t=N", s)) if name == "ratelimit" else (lambda s: s)
        if any(mask(f) == mask(value) for f in found):
            return []
        return [f"header {name}: README shows {value!r}, got {found}"]
    if re.match(r"^[a-z_]+\{.*\} \d+$", e):
        series = e.rsplit(" ", 1)[0]
        return [] if any(l.startswith(series + " ") for l in lines) else [f"series {series} missing"]
    return [] if e in output else [f"text not in the output: {e!r}"]


def docs_pages_in_chromium():
    """The tour's "API docs" step in a real browser: both pages render their operations, and
    key-admin's optional filters offer "any" (first, so the list is unfiltered) while its time
    filters stay free text. Returns the number of problems."""
    problems = []
    for url, needles in [
        ("http://127.0.0.1:8000/docs", ["/v1/chat/completions", "Try it"]),
        ("http://127.0.0.1:8001/docs", [
            '<span>role (query)</span><select><option value="">any</option>',
            '<span>state (query)</span><select><option value="">any</option>',
            '<span>since (query)</span><input',
        ]),
    ]:
        dom = subprocess.run(
            ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
             "--virtual-time-budget=5000", "--dump-dom", url],
            capture_output=True, text=True, timeout=120).stdout
        for n in needles:
            if n not in dom:
                problems.append(f"{url}: {n!r} not in the page Chromium rendered")
    for p in problems:
        print(f"tour: {p}")
    print(f"tour: both docs pages rendered in Chromium, {len(problems)} problem(s)")
    return len(problems)


def wait_port(port, deadline):
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.2)
    return False


def main():
    banner = tempfile.NamedTemporaryFile("w+", delete=False, suffix=".log")
    stack = subprocess.Popen(
        ["bash", os.path.join(ROOT, "scripts/run.sh")], cwd=ROOT, stdout=banner,
        stderr=subprocess.STDOUT, start_new_session=True)
    failures = 0
    # The commands run as in a reader's shell, not as a sub-make of `make test`.
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES")}
    try:
        deadline = time.time() + 600
        if not all(wait_port(p, deadline) for p in (8000, 8001, 9000)):
            print(open(banner.name).read()[-3000:])
            sys.exit("tour: make run's stack did not come up")
        keys = dict(re.findall(r"export (\w+_KEY)=(\S+)", open(banner.name).read()))
        state = tempfile.NamedTemporaryFile("w", delete=False, suffix=".sh")
        state.write("".join(f"export {k}={v}\n" for k, v in keys.items()))
        state.close()
        last_output = ""
        checked = 0
        for body in tour_blocks():
            for cmd, expected in steps(body):
                script = []
                for line in cmd:
                    m = re.match(r'export (\w+)=\S*…\S*\s+# "(\w+)" above', line)
                    if m:
                        got = actual_json(last_output) or {}
                        script.append(f"export {m.group(1)}={json.dumps(got.get(m.group(2), ''))}")
                    elif re.match(r"export \w+_KEY=igk_…", line):
                        continue  # the demo keys: taken from the banner
                    else:
                        script.append(line)
                if not script:
                    continue
                text = "\n".join(script)
                run = subprocess.run(
                    ["bash", "-c", f"set -a; source {state.name}; {{\n{text}\n}} 2>&1\n"
                     f"declare -px | grep -vE '^declare -[a-zA-Z]*r' > {state.name}.next"],
                    cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
                if ":8001" in text:
                    # A reader pastes the next command after key-admin answered; the gateway
                    # sees a key change within a quarter of a second (README, "Keys").
                    time.sleep(1)
                if os.path.exists(state.name + ".next"):
                    os.replace(state.name + ".next", state.name)
                last_output = run.stdout
                for e in expected:
                    checked += 1
                    for p in check(e, run.stdout):
                        failures += 1
                        print(f"tour: {script[0][:100]}\n      # {e[:120]}\n      -> {p}")
        print(f"tour: {checked} lines of README output checked against the running stack, {failures} differ")
        failures += docs_pages_in_chromium()
    finally:
        os.killpg(stack.pid, signal.SIGTERM)
        stack.wait(timeout=30)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
