"""kodosumi_runners.py: kodosumi-shaped runners on a Ray head, for tests and the benchmark.

A runner is what kodosumi's spooler drains: a named, detached actor in namespace `kodosumi`
(name = fid) that owns a ray.util.queue.Queue of {timestamp, kind, payload}, payloads in
kodosumi's serialize() format. It emits, like kodosumi's Runner: status starting, inputs, meta,
status running, `lines` stdout lines ("line 1", ...), final, status finished.

  spawn --fids F1,F2 --lines N [--interval S] [--no-username-method] [--preload] [--odd]
        starts one runner per fid; with --preload every event is queued before the command
        returns (a backlog to drain), else each runner emits while it runs (S seconds apart);
        --odd adds, after status running, an item whose payload is an object, not text, and
        one without a kind
  kill FID | kill --fids F1,.. [--namespace N]   ends runners at once (ray.kill), as a crashed
        actor; with --namespace kodo, kodo's own actors (a drainer: kodo-events-drainer-0)
  drain --fids F1,.. --batch N [--since T]   drains the runners' queues as kodosumi's spooler
        does (get_nowait_batch(min(qsize, N)), one runner after another); prints events/s over
        the drain itself and, with --since (the epoch time the caller started this command),
        over the whole run: interpreter start, ray.init and finding the queues included
"""

import argparse
import json
import os
import sys
import threading
import time

import ray
from ray.util.queue import Queue


def serialize(value):
    """kodosumi's helper.serialize(): {"<type name>": value}."""
    return json.dumps({type(value).__name__: value})


class Emitter:
    def __init__(self, fid, lines, interval, odd=False):
        self.fid = fid
        self.queue = Queue()
        self.lines = lines
        self.interval = interval
        self.odd = odd

    def events(self):
        meta = {"fid": self.fid, "username": "alice", "app_url": "/test", "entry_point": "t:run",
                "summary": "kodosumi-shaped runner", "tags": ["test"], "kodosumi": "1.1.0"}
        yield "status", "starting"
        yield "inputs", serialize({"lines": self.lines})
        yield "meta", serialize(meta)
        yield "status", "running"
        if self.odd:
            yield "result", {"dict": {"n": 1}}
            yield "", "an item without a kind"
        for i in range(1, self.lines + 1):
            yield "stdout", "line %d" % i
        yield "final", serialize({"lines": self.lines, "text": "done \u2713"})
        yield "status", "finished"

    def emit(self, batch=1000):
        pending = []
        for kind, payload in self.events():
            pending.append({"timestamp": time.time(), "kind": kind, "payload": payload})
            if self.interval or len(pending) >= batch:
                self.queue.put_nowait_batch(pending)
                pending = []
            if self.interval:
                time.sleep(self.interval)
        if pending:
            self.queue.put_nowait_batch(pending)

    def start(self, preload):
        if preload:
            self.emit()
        else:
            threading.Thread(target=self.emit, daemon=True).start()

    def get_queue(self):
        return self.queue


@ray.remote(num_cpus=0)
class Runner(Emitter):
    def get_username(self):
        return "alice"


@ray.remote(num_cpus=0)
class RunnerWithoutUsername(Emitter):
    """A runner that names its user only in its meta event."""


def main():
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["spawn", "kill", "drain"])
    p.add_argument("fid", nargs="?")
    p.add_argument("--fids", default="")
    p.add_argument("--lines", type=int, default=10)
    p.add_argument("--interval", type=float, default=0.0)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--no-username-method", action="store_true")
    p.add_argument("--preload", action="store_true")
    p.add_argument("--odd", action="store_true")
    p.add_argument("--since", type=float, default=0.0)
    p.add_argument("--namespace", default="kodosumi")
    args = p.parse_args()
    ray.init(address=os.environ.get("KODO_RAY_SERVER", "127.0.0.1:6379"), namespace="kodosumi",
             logging_level="error", log_to_driver=False)
    fids = [f for f in args.fids.split(",") if f]
    if args.command == "spawn":
        cls = RunnerWithoutUsername if args.no_username_method else Runner
        runners = [cls.options(name=fid, lifetime="detached").remote(fid, args.lines,
                                                                     args.interval, args.odd)
                   for fid in fids]
        ray.get([r.start.remote(args.preload) for r in runners])
    elif args.command == "kill":
        for fid in fids or [args.fid]:
            ray.kill(ray.get_actor(fid, namespace=args.namespace))
    else:
        queues = [ray.get(ray.get_actor(f, namespace="kodosumi").get_queue.remote()) for f in fids]
        started, total = time.time(), 0
        for q in queues:
            while True:
                n = min(q.qsize(), args.batch)
                if n == 0:
                    break
                total += len(q.get_nowait_batch(n))
        now = time.time()
        elapsed, whole = now - started, now - (args.since or started)
        print("drained %d events (batch %d): %.0f events/s over the whole run (%.2f s from the"
              " command's start), %.0f events/s over the drain itself (%.2f s)"
              % (total, args.batch, total / whole, whole, total / elapsed if elapsed else 0,
                 elapsed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
