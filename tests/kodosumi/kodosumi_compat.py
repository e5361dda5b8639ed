#!/usr/bin/env python3
"""kodosumi 1.1.0's own code (from PyPI, in the venv .ci/setup makes) against kodo, both ways:

- kodosumi's readers (its status function, its timeline's loader and lister, its formatter)
  read the files kodo writes and give the answers kodo's routes give;
- kodo's routes (/outputs/status, /outputs/main, /outputs/stdio, DELETE) read files written
  the way kodosumi's runner and spooler write them (its serialize(), its table) and give
  kodosumi's answers, for a user folder named by a role UUID (not kodo's default user).

Usage: kodosumi_compat.py KODO_HOST PLUGIN_DIR
"""
import asyncio
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import yaml
from bson.objectid import ObjectId
from kodosumi import dtypes
from kodosumi.const import MAIN_EVENTS, STDIO_EVENTS
from kodosumi.helper import serialize
from kodosumi.runner.formatter import DefaultFormatter
from kodosumi.service.inputs.outputs import _status
from kodosumi.service.inputs.timeline import tool

FAILURES = []

# A flow that writes every kind a kodosumi flow writes: agent, action, result as Markdown,
# Text and HTML models, stdout with ANSI colours, stderr, debug, and a final dict.
FLOW = r"""#!/bin/sh
cat >/dev/null
emit() { printf '%s\n' "$1" >&"$KODO_EVENTS_FD"; }
emit '{"kind": "agent", "payload": {"agent": {"role": "writer", "tools": []}}}'
emit '{"kind": "action", "payload": {"thought": "look <first>"}}'
emit '{"kind": "result", "type": "Markdown", "payload": {"body": "# Title\n\nsome *text*\nnext line"}}'
emit '{"kind": "result", "type": "Text", "payload": {"body": "plain text"}}'
emit '{"kind": "result", "type": "HTML", "payload": {"body": "<b>bold</b>"}}'
emit '{"kind": "result", "payload": "a string result"}'
emit '{"kind": "result", "payload": [1, 2.5, "x", {"k": true}]}'
emit '{"kind": "debug", "payload": "debug note"}'
printf '\033[31mred\033[0m and \033[1;32mbold green\033[0m <tag> & more\n'
echo "a note on stderr" >&2
emit '{"kind": "final", "type": "Markdown", "payload": {"body": "**done** with `code`"}}'
"""


def check(condition, what):
    if condition:
        print("ok  ", what)
    else:
        print("FAIL", what)
        FAILURES.append(what)


def check_equal(got, want, what):
    if got == want:
        print("ok  ", what)
    else:
        print("FAIL", what, "\n  got: ", repr(got), "\n  want:", repr(want))
        FAILURES.append(what)


class Host:
    def __init__(self, binary, plugin_dir, exec_dir, flow):
        self.log = tempfile.NamedTemporaryFile(prefix="kodo-host-log-", delete=False)
        self.proc = subprocess.Popen(
            [binary, "--address", "127.0.0.1:0", "--plugin-dir", plugin_dir,
             "--exec-dir", str(exec_dir), "--flow", f"demo={flow}",
             "--flow", "waits=/bin/sh -c 'cat >/dev/null; sleep 30'",
             "--sse-keepalive", "0.5", "serve"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            text = Path(self.log.name).read_text(errors="replace")
            m = re.search(r"serving on http://127\.0\.0\.1:(\d+)", text)
            if m:
                self.base = f"http://127.0.0.1:{m.group(1)}"
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("kodo-host did not start:\n" + Path(self.log.name).read_text())

    def request(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def sse(self, path):
        """The frames of an event stream up to its eof, as (event, id, data)."""
        frames = []
        with urllib.request.urlopen(self.base + path, timeout=60) as r:
            event, ident, data = None, None, []
            for raw in r:
                line = raw.decode().rstrip("\n")
                if line == "":
                    if event is not None:
                        frames.append((event, ident, "\n".join(data)))
                        if event == "eof":
                            return frames
                    event, ident, data = None, None, []
                elif line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("id: "):
                    ident = int(line[4:])
                elif line.startswith("data: "):
                    data.append(line[6:])
        return frames

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)
        os.unlink(self.log.name)


def rows(db):
    conn = sqlite3.connect(str(db))
    out = conn.execute("SELECT id, timestamp, kind, message FROM monitor ORDER BY id").fetchall()
    conn.close()
    return out


def kodosumi_status(db):
    conn = sqlite3.connect(str(db))
    return asyncio.run(_status(conn))


def same_markup(a, b):
    """HTML from two Markdown engines: equal but for whitespace between tags."""
    norm = lambda s: re.sub(r">\s+<", "><", s.strip())
    return norm(a) == norm(b)


def formatted_matches(kind, got, want):
    if kind == "inputs":
        return yaml.safe_load(got) == yaml.safe_load(want)
    if kind in ("result", "final", "action"):
        return same_markup(got, want)
    return got == want


def check_stream(host, fid, db, which, events):
    """kodo's formatted stream against kodosumi's formatter over the same rows, and ?raw."""
    formatter = DefaultFormatter()
    stored = [r for r in rows(db) if r[2] in events]
    frames = [f for f in host.sse(f"/outputs/{which}/{fid}") if f[0] not in ("alive", "eof")]
    check_equal([(f[0], f[1]) for f in frames], [(r[2], r[0]) for r in stored],
                f"{which}: kodo sends kodosumi's events and row ids")
    for (kind, ident, data), (_, stamp, _, message) in zip(frames, stored):
        prefix = f"{stamp}:"
        check(data.startswith(prefix), f"{which} id {ident}: data starts with {prefix!r}")
        want = formatter.convert(kind, message)
        ok = formatted_matches(kind, data[len(prefix):], want)
        if not ok:
            print("  got: ", repr(data[len(prefix):]), "\n  want:", repr(want))
        check(ok, f"{which} id {ident} ({kind}): formatted as kodosumi's formatter does")
    raw = [f for f in host.sse(f"/outputs/{which}/{fid}?raw") if f[0] not in ("alive", "eof")]
    check_equal([f[2] for f in raw], [f"{r[1]}:{r[3]}" for r in stored],
                f"{which}?raw: kodosumi's unformatted data")
    last = host.sse(f"/outputs/{which}/{fid}?raw")[-1]
    check_equal(last, ("eof", 0, "end of stream"), f"{which}: ends with kodosumi's eof frame")


def kodo_writes(host, exec_dir):
    """kodosumi's readers on what kodo writes."""
    status, body = host.request("POST", "/api/v1/executions",
                                {"flow": "demo", "inputs": {"name": "kodo", "n": 3}})
    check_equal(status, 201, "launch")
    fid = json.loads(body)["fid"]
    # Right after a launch: a status, never an empty one.
    status, body = host.request("GET", f"/outputs/status/{fid}")
    check(status == 200 and json.loads(body)["status"] in ("starting", "running", "finished"),
          "status right after launch is the launch state or later, got " + body)
    deadline = time.time() + 60
    while time.time() < deadline:
        answer = json.loads(host.request("GET", f"/outputs/status/{fid}")[1])
        if answer["status"] in ("finished", "error"):
            break
        time.sleep(0.1)
    check_equal(answer["status"], "finished", "the demo flow finishes")
    db = exec_dir / "admin" / fid / "sqlite3.db"

    by_kind = {}
    for _, _, kind, message in rows(db):
        by_kind.setdefault(kind, []).append(message)
    check_equal(json.loads(by_kind["inputs"][0]), json.loads(serialize({"name": "kodo", "n": 3})),
                "inputs stored as kodosumi's serialize() stores a dict")
    meta = json.loads(by_kind["meta"][0])
    check_equal(list(meta), ["dict"], "meta stored as {\"dict\": ...}")
    check(meta["dict"]["kodosumi"].startswith("kodo "), "meta's version under \"kodosumi\"")
    check_equal(json.loads(by_kind["result"][3]), json.loads(serialize("a string result")),
                "a string result stored as serialize() stores a str")
    check_equal(json.loads(by_kind["result"][4]), json.loads(serialize([1, 2.5, "x", {"k": True}])),
                "a list result stored as serialize() stores a list")
    check_equal(json.loads(by_kind["final"][0]),
                json.loads(serialize(dtypes.Markdown(body="**done** with `code`"))),
                "a typed final stored as serialize() stores a Markdown model")
    check_equal(by_kind["debug"], ["debug note"], "debug stored as plain text")

    # kodosumi's status function on kodo's file, and kodo's route: the same answer, but for
    # the version kodosumi reads from a key its runner never writes (always null there).
    theirs = kodosumi_status(db)
    ours = json.loads(host.request("GET", f"/outputs/status/{fid}")[1])
    check(theirs["kodosumi_version"] is None and ours["kodosumi_version"] == meta["dict"]["kodosumi"],
          "kodosumi_version: kodo answers the version written")
    for key in ("kodosumi_version", "locks"):
        theirs.pop(key)
        ours.pop(key)
    check_equal(ours, theirs, "/outputs/status: kodo's answer is kodosumi's on kodo's file")
    check_equal(theirs["entry_point"], "demo", "kodosumi reads kodo's meta (entry_point)")
    check_equal(theirs["username"], "admin", "kodosumi reads kodo's meta (username)")

    # The timeline's loader and lister.
    loaded = tool.load_result(db)
    check_equal(loaded["status"], "finished", "timeline load_result reads kodo's status")
    check_equal(loaded["fid"], fid, "timeline load_result reads kodo's meta")
    page = tool.load_page(exec_dir / "admin")
    listed = [item["fid"] for item in page.get("items", {}).get("append", [])]
    check(fid in listed, f"timeline load_page lists kodo's execution ({listed})")

    check_stream(host, fid, db, "main", MAIN_EVENTS)
    check_stream(host, fid, db, "stdio", STDIO_EVENTS)
    check_equal(host.sse(f"/outputs/stream/{fid}")[-1], ("eof", 0, "end of stream"),
                "stream: ends with kodosumi's eof frame")
    return fid


def kodosumi_file(exec_dir, user, fid):
    """An execution as kodosumi's runner and spooler write it (their code for the payloads,
    their table), finished with an error whose traceback names a kodosumi.error."""
    folder = exec_dir / user / fid
    folder.mkdir(parents=True)
    conn = sqlite3.connect(str(folder / "sqlite3.db"), isolation_level=None)
    conn.execute("pragma journal_mode=wal;")
    conn.execute("""CREATE TABLE IF NOT EXISTS monitor (
        id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp REAL NOT NULL,
        kind TEXT NOT NULL, message TEXT NOT NULL)""")
    t = time.time() - 100
    events = [
        ("status", "starting"),
        ("inputs", serialize({"topic": "ducks", "tags": ["a", "b"]})),
        ("meta", serialize({"fid": fid, "username": user, "app_url": "/-/demo",
                            "panel_url": "http://panel", "entry_point": "demo:run",
                            "kodosumi": "1.1.0", "tags": ["x"], "summary": "S",
                            "description": "D", "deprecated": False, "author": "me",
                            "organization": "org", "version": "1.0"})),
        ("status", "running"),
        ("stdout", "\x1b[34mblue\x1b[0m line"),
        ("result", serialize(dtypes.Markdown(body="## Part\n\n- one\n- two"))),
        ("action", serialize({"tool": "search", "input": "it's"})),
        ("error", "Traceback (most recent call last):\nkodosumi.error.KodosumiError: it broke"),
        ("status", "error"),
    ]
    for i, (kind, message) in enumerate(events):
        conn.execute("INSERT INTO monitor (timestamp, kind, message) VALUES (?, ?, ?)",
                     (t + i * 0.123456789, kind, message))
    conn.close()
    return folder / "sqlite3.db"


def kodosumi_writes(host, exec_dir):
    """kodo's routes on kodosumi's file, in a user folder named by a role UUID."""
    user = str(uuid.uuid4())
    fid = str(ObjectId())
    db = kodosumi_file(exec_dir, user, fid)
    theirs = kodosumi_status(db)
    status, body = host.request("GET", f"/outputs/status/{fid}")
    check_equal(status, 200, "status of another user's kodosumi execution")
    ours = json.loads(body)
    check_equal(ours["final"], serialize(dtypes.Text(body="it broke")),
                "final of a failed run: kodosumi's Text of the kodosumi.error lines")
    check_equal(ours.pop("kodosumi_version"), "1.1.0",
                "kodosumi_version: the version kodosumi's runner wrote under \"kodosumi\"")
    theirs.pop("kodosumi_version")
    theirs.pop("locks")
    ours.pop("locks")
    check_equal(ours, theirs, "/outputs/status: kodosumi's answer on kodosumi's file")
    check_stream(host, fid, db, "main", MAIN_EVENTS)
    check_stream(host, fid, db, "stdio", STDIO_EVENTS)
    listing = json.loads(host.request("GET", f"/api/v1/executions?username={user}")[1])
    check_equal([x["fid"] for x in listing["executions"]], [fid], "listing for that user")

    status, body = host.request("DELETE", f"/outputs/{fid}")
    check_equal((status, body), (204, ""), "DELETE /outputs/{fid}: 204, no body")
    status, body = host.request("GET", f"/outputs/status/{fid}")
    check_equal((status, json.loads(body)),
                (404, {"status_code": 404, "detail": f"Execution {fid} not found."}),
                "unknown fid on kodosumi's route: kodosumi's error body")
    status, body = host.request("GET", f"/api/v1/executions/{fid}")
    check(status == 404 and "error" in json.loads(body), "kodo's own route keeps its error form")


def main():
    binary, plugin_dir = sys.argv[1], sys.argv[2]
    work = Path(tempfile.mkdtemp(prefix="kodo-kodosumi-"))
    flow = work / "demo.sh"
    flow.write_text(FLOW)
    flow.chmod(0o755)
    exec_dir = work / "execution"
    host = Host(binary, plugin_dir, exec_dir, flow)
    try:
        kodo_writes(host, exec_dir)
        kodosumi_writes(host, exec_dir)
    finally:
        host.stop()
        if FAILURES:
            print("--- kodo-host log kept in", work)
        else:
            shutil.rmtree(work)
    print(f"{len(FAILURES)} failure(s)")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
