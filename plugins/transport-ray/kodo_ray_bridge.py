"""kodo_ray_bridge.py: the Ray side of kodo's `ray` transport, one process per plugin handle.

The plugin (ray_transport.cpp) starts this script with the venv's Python and talks to it over
the script's stdin and stdout: frames of a 4-byte big-endian length and a JSON object (see
README, "Ray transport"). Ray's own client lives only here, so a Ray failure ends this process,
never the host; the plugin restarts it.

Two sources feed the consumer:
  - kodosumi's runners: named detached actors in namespace `kodosumi` (name = fid) owning a
    ray.util.queue.Queue of {timestamp, kind, payload}. Reads are destructive, so every batch
    is written to the spill file before it is sent, and leaves it only when the host acked it.
  - kodo's own producers: one shared, detached actor (KodoStream) that keeps each event until
    it is acked, so a restarted bridge delivers again whatever was not acked.
"""

import time

STARTED = time.time()  # before Ray's import, which is a good part of a bridge's start

import argparse
import asyncio
import bisect
import collections
import json
import os
import re
import socket
import struct
import sys
import threading
import zlib

import ray
from ray.exceptions import RayError
from ray.util.queue import Empty

FINAL_STATUSES = ("finished", "error")
COMPACT_BYTES = 64 << 20  # a spill file past this is rewritten ...
COMPACT_UNACKED = 100000  # ... when it holds fewer unacked events than this
FID = re.compile(r"^[A-Za-z0-9_@-][A-Za-z0-9_.@-]{0,63}$")  # kodo_event's naming rule


def mark(what):
    """A milestone of the bridge's start on stderr (the host's log): where a run's first
    seconds go (import, ray.init, drainers up, discovery, first batch)."""
    sys.stderr.write("kodo_ray_bridge[%d]: +%.2f s %s\n" % (os.getpid(), time.time() - STARTED,
                                                         what))
    sys.stderr.flush()


# ---- Frames --------------------------------------------------------------------------------


class Wire:
    """Frames to the plugin on stdout; one writer at a time."""

    def __init__(self):
        # Frames go to a copy of fd 1, and fd 1 then points at stderr: what Ray prints to
        # stdout (its raylet's warnings reach a driver there) lands in the host's log, not
        # inside the frame stream, which it would break.
        self.out = os.fdopen(os.dup(1), "wb")
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        self.lock = threading.Lock()

    def send(self, message):
        self.send_raw(json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode())

    def send_raw(self, body):
        with self.lock:
            self.out.write(struct.pack(">I", len(body)) + body)
            self.out.flush()


def read_frames(loop, queue):
    """Runs in a thread: frames from the plugin on stdin, handed to the event loop."""
    source = sys.stdin.buffer
    while True:
        head = source.read(4)
        if len(head) < 4:
            break
        (length,) = struct.unpack(">I", head)
        body = source.read(length)
        if len(body) < length:
            break
        loop.call_soon_threadsafe(queue.put_nowait, json.loads(body))
    loop.call_soon_threadsafe(queue.put_nowait, None)  # the plugin went away: exit


# ---- kodo's own stream ---------------------------------------------------------------------


@ray.remote(num_cpus=0)
class KodoStream:
    """Events of kodo's producers, kept until acked. An event is [fid, username, seq, ts, kind,
    payload]; its key is (fid, seq), so a batch put twice (a producer's retry) is kept once.
    A consumer session that is new (a restarted bridge) gets every unacked event again."""

    def __init__(self, capacity):
        self.capacity = capacity
        self.log = {}  # (fid, seq) -> event, in put order
        self.delivered = {}  # (fid, seq) -> times delivered
        self.pending = collections.deque()
        self.session = None
        self.arrived = asyncio.Event()

    async def put(self, events):
        fresh = [e for e in events if (e[0], e[2]) not in self.log]
        if fresh and len(self.log) + len(fresh) > self.capacity:
            return False
        for e in fresh:
            key = (e[0], e[2])
            self.log[key] = e
            self.pending.append(key)
        self.arrived.set()
        return True

    async def take(self, session, n, wait_s):
        if session != self.session:
            self.session = session
            self.pending = collections.deque(self.log.keys())
        if not self.pending:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), wait_s)
            except asyncio.TimeoutError:
                pass
        out = []
        while self.pending and len(out) < n:
            key = self.pending.popleft()
            event = self.log.get(key)
            if event is None:
                continue
            count = self.delivered.get(key, 0) + 1
            self.delivered[key] = count
            out.append(event + [count])
        return out

    async def ack(self, keys):
        for fid, seq in keys:
            self.log.pop((fid, seq), None)
            self.delivered.pop((fid, seq), None)

    async def depth(self):
        return len(self.log)


def encode(items):
    """A batch of queue items as one JSON array, made once: the bridge writes it to the spill
    file and into the frame unchanged, and the plugin parses it (RapidJSON). A lone surrogate
    becomes "?" rather than a batch nobody can read."""
    text = json.dumps(items, ensure_ascii=False, separators=(",", ":"), default=str)
    return text.encode("utf-8", "replace")


def scan(items):
    """What the bridge needs from a batch without touching each event in Python: the user a
    meta event names, and whether the run ended (a final status)."""
    username, finished = None, False
    kinds = [i.get("kind") if isinstance(i, dict) else None for i in items]
    if "meta" in kinds:
        username = meta_username(items[kinds.index("meta")].get("payload"))
    if "status" in kinds:
        finished = any(k == "status" and i.get("payload") in FINAL_STATUSES
                       for k, i in zip(kinds, items))
    return username, finished


@ray.remote(num_cpus=0)
class Drainer:
    """Makes the destructive reads of runners' queues inside Ray and keeps what it read until
    the bridge has it on disk, so a bridge killed while a read is in flight loses nothing: the
    next bridge takes the rest from here. It numbers each runner's events (seq) itself, from
    the bridge's first hint on, so two bridges' reads in flight never share a seq."""

    def __init__(self):
        self.next_seq = {}  # fid -> seq of the next event read
        self.known = {}  # fid -> items the queue is known to hold (it only grows meanwhile)
        self.held = {}  # fid -> [(seq, count, blob)] read and not yet released

    async def drain(self, fid, queue, n, seq_hint):
        known = self.known.get(fid, 0)
        if not known:
            known = await queue.actor.qsize.remote()
        take = min(known, n)
        try:
            items = await queue.actor.get_nowait_batch.remote(take) if take else []
        except Empty:  # another bridge's read in flight took some: ask the size again
            self.known[fid] = 0
            return 0, max(self.next_seq.get(fid, 0), seq_hint), 0, b"[]", None, False
        self.known[fid] = known - take
        seq = max(self.next_seq.get(fid, 0), seq_hint)
        if not items:
            return known, seq, 0, b"[]", None, False
        self.next_seq[fid] = seq + len(items)
        blob = encode(items)
        self.held.setdefault(fid, []).append((seq, len(items), blob))
        return known, seq, len(items), blob, *scan(items)

    async def release(self, fid, upto):
        held = self.held.get(fid)
        if held:
            self.held[fid] = [h for h in held if h[0] + h[1] > upto]

    async def forget(self, fid):
        for table in (self.held, self.next_seq, self.known):
            table.pop(fid, None)

    async def holding(self, fid):
        return self.held.get(fid, [])

    async def ready(self):
        return True


# ---- Spill file: kodosumi events drained and not yet acked ------------------------------------


class Acked:
    """One runner's acked seqs as merged [first, last] ranges; acks come nearly in order, so
    the list stays a range or two long."""

    def __init__(self):
        self.ranges = []

    def add(self, first, last):
        i = bisect.bisect_left(self.ranges, [first, first])
        if i and self.ranges[i - 1][1] >= first - 1:
            i -= 1
        j = i
        while j < len(self.ranges) and self.ranges[j][0] <= last + 1:
            first, last = min(first, self.ranges[j][0]), max(last, self.ranges[j][1])
            j += 1
        self.ranges[i:j] = [[first, last]]

    def covers(self, first, last):
        i = bisect.bisect_right(self.ranges, [first, float("inf")])
        return bool(i) and self.ranges[i - 1][0] <= first and self.ranges[i - 1][1] >= last

    def drop_below(self, seq):
        self.ranges = [[max(a, seq), b] for a, b in self.ranges if b >= seq]


class Spill:
    """An append-only log, a line per record: a batch of drained events as the drainer encoded
    it ("b": fid, first seq, count, [{timestamp, kind, payload}, ...]), acked seq ranges ("a"),
    a runner done ("d") and a runner's next seq and user ("n"). Written before a batch is sent,
    so a killed bridge loses no event it had drained; replayed and compacted at start. No event
    is decoded here: batches stay the bytes the drainer made.
    """

    def __init__(self, directory):
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, "spill.jsonl")
        self.batches = {}  # fid -> {first seq: (count, blob)}, unacked, in seq order
        self.acked = collections.defaultdict(Acked)
        self.unacked = 0  # events in self.batches
        self.next_seq = {}
        self.usernames = {}
        self.done = set()
        if os.path.exists(self.path):
            with open(self.path, "rb") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        break  # a line cut by a kill: everything before it counts
                    self.apply(record)
        self.compact()

    def apply(self, record):
        tag = record[0]
        if tag == "b":
            self.add(record[1], record[2], record[3], encode(record[4]))
        elif tag == "e":  # before batches: events [fid, user, seq, ts, kind, payload]
            for fid, _, seq, ts, kind, payload in record[1]:
                self.add(fid, seq, 1, encode([{"timestamp": ts, "kind": kind,
                                               "payload": payload}]))
        elif tag == "a":  # [fid, first, last] ranges (before: [fid, seq])
            for fid, first, *last in record[1]:
                self.ack(fid, first, last[0] if last else first)
        elif tag == "n":
            self.next_seq[record[1]] = max(self.next_seq.get(record[1], 0), record[2])
            if record[3]:
                self.usernames[record[1]] = record[3]
        elif tag == "d":
            self.done.add(record[1])

    def add(self, fid, first, count, blob):
        self.batches.setdefault(fid, {})[first] = (count, blob)
        self.unacked += count
        self.next_seq[fid] = max(self.next_seq.get(fid, 0), first + count)

    def ack(self, fid, first, last):
        batches = self.batches.get(fid)
        if not batches:
            return
        acked = self.acked[fid]
        acked.add(first, last)
        while batches:
            start = next(iter(batches))
            count = batches[start][0]
            if not acked.covers(start, start + count - 1):
                break
            del batches[start]
            self.unacked -= count
        if batches:
            acked.drop_below(next(iter(batches)))
        else:
            del self.batches[fid]
            del self.acked[fid]

    def pending(self, fid):
        """A runner's unacked events, as (first seq, count, blob) batches; the acked ones of a
        batch partly acked are left out (its events decoded, once, here)."""
        acked = self.acked.get(fid)
        for first, (count, blob) in self.batches.get(fid, {}).items():
            if acked is None or not any(a <= first + count - 1 and b >= first
                                        for a, b in acked.ranges):
                yield first, count, blob
                continue
            events = json.loads(blob)
            run = []
            for i, event in enumerate(events + [None]):
                seq = first + i
                if event is not None and not acked.covers(seq, seq):
                    run.append(event)
                    continue
                if run:
                    yield seq - len(run), len(run), encode(run)
                    run = []

    @staticmethod
    def batch_line(fid, first, count, blob):
        return b'["b",%s,%d,%d,%s]\n' % (json.dumps(fid).encode(), first, count, blob)

    def compact(self):
        kept = [(fid, batch) for fid in list(self.batches) for batch in self.pending(fid)]
        temporary = self.path + ".new"
        with open(temporary, "wb") as f:
            for fid, seq in self.next_seq.items():
                f.write(self.line(["n", fid, seq, self.usernames.get(fid)]))
            for fid in self.done:
                f.write(self.line(["d", fid]))
            for fid, batch in kept:
                f.write(self.batch_line(fid, *batch))
        os.replace(temporary, self.path)
        self.batches, self.acked, self.unacked = {}, collections.defaultdict(Acked), 0
        for fid, batch in kept:
            self.add(fid, *batch)
        self.file = open(self.path, "ab")

    @staticmethod
    def line(record):
        return json.dumps(record, ensure_ascii=False).encode() + b"\n"

    def write(self, lines):
        """Appends records (lines made by line() or batch_line(), already applied)."""
        self.file.write(b"".join(lines))
        self.file.flush()  # in the kernel's hands: survives a SIGKILL of this process
        if self.file.tell() > COMPACT_BYTES and self.unacked < COMPACT_UNACKED:
            self.file.close()
            self.compact()  # the log keeps only what is not acked yet

    def record(self, record):
        self.apply(record)
        self.write([self.line(record)])


# ---- The bridge ----------------------------------------------------------------------------


def meta_username(payload):
    """kodosumi's meta payload is serialize()d: {"dict": {"username": ...}} (as text; a runner
    that queued the object itself is read too)."""
    try:
        value = json.loads(payload) if isinstance(payload, (str, bytes)) else payload
        inner = value.get("dict", value) if isinstance(value, dict) else None
        name = inner.get("username") if isinstance(inner, dict) else None
        return name if isinstance(name, str) and name else None
    except ValueError:
        return None


class Bridge:
    def __init__(self, args, wire):
        self.args = args
        self.wire = wire
        self.session = "%d-%f" % (os.getpid(), time.time())
        self.stream = None
        self.spill = None
        self.consuming = False
        self.outstanding = 0  # deliveries sent and not acked
        self.credit = asyncio.Event()
        self.credit.set()
        self.runners = {}  # fid -> task
        self.depths = {}  # fid -> last qsize seen
        self.stream_depth = 0
        self.drains = 0
        self.drained = 0
        self.largest_batch = 0
        self.publishes = asyncio.Queue()
        self.first_batch = True

    def connect(self):
        host, _, port = self.args.address.rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
        except (OSError, ValueError) as e:
            raise ConnectionError("cannot reach the Ray head at %s: %s" % (self.args.address, e))
        mark("importing Ray done")
        ray.init(address=self.args.address, namespace="kodo", logging_level="error",
                 log_to_driver=False)
        mark("ray.init done")
        # Created now, while the host opens its storage and before any runner is found: an
        # actor's worker process takes a second or more to start.
        self.drainers = [self.make_drainer(i) for i in range(self.args.drainers)]
        self.stream = KodoStream.options(
            name=self.args.stream, namespace="kodo", lifetime="detached", get_if_exists=True
        ).remote(self.args.capacity)

    def make_drainer(self, index):
        return Drainer.options(name="%s-drainer-%d" % (self.args.stream, index),
                               namespace="kodo", lifetime="detached",
                               get_if_exists=True).remote()

    def drainer_index(self, fid):
        """A runner's drainer, the same one for every bridge (the drainer keeps the runner's
        seq and what it read), so long as the number of drainers stays the same."""
        return zlib.crc32(fid.encode()) % len(self.drainers)

    async def warm(self):
        try:
            await asyncio.gather(*(d.ready.remote() for d in self.drainers))
            mark("%d drainer actors ready" % len(self.drainers))
        except RayError as e:  # drain() makes a failed drainer again when it needs it
            mark("a drainer actor did not start: %s" % str(e).strip().splitlines()[-1])

    # -- messages from the plugin

    async def handle(self, message):
        op = message["op"]
        if op == "publish":
            self.publishes.put_nowait(message)
        elif op == "consume":
            if not self.consuming:
                self.consuming = True
                self.spill = Spill(self.args.spill_dir)
                mark("consuming: spill file read, %d events not acked" % self.spill.unacked)
                asyncio.ensure_future(self.replay_spill())
                asyncio.ensure_future(self.consume_stream())
                asyncio.ensure_future(self.discover())
        elif op == "ack":
            # [source, fid, first seq, last seq] ranges
            kodo, runner, total = [], [], 0
            for source, fid, first, last in message["ranges"]:
                total += last - first + 1
                if source == "k":
                    kodo.extend((fid, seq) for seq in range(first, last + 1))
                else:
                    runner.append([fid, first, last])
            if runner and self.spill:
                self.spill.record(["a", runner])
            if kodo:
                await self.stream.ack.remote(kodo)
            self.outstanding -= total
            if self.outstanding < self.args.max_unacked:
                self.credit.set()

    def deliver(self, count, frame):
        self.outstanding += count
        if self.outstanding >= self.args.max_unacked:
            self.credit.clear()
        self.wire.send_raw(frame)

    def send_batch(self, fid, username, first, count, blob, times):
        """A runner's events first..first+count-1 in one frame, the drainer's bytes as they are."""
        if self.first_batch:
            self.first_batch = False
            mark("first batch sent")
        self.deliver(count, b'{"op":"batch","fid":%s,"username":%s,"seq":%d,"delivered":%d,'
                     b'"events":%s}' % (json.dumps(fid).encode(), json.dumps(username).encode(),
                                        first, times, blob))

    # -- kodo's own producers

    async def publish(self):
        """Puts batches in the order they came; apart from acks, so a full stream waits for
        the consumer's acks instead of blocking them."""
        while True:
            message = await self.publishes.get()
            while not await self.stream.put.remote(message["events"]):
                await asyncio.sleep(0.05)  # the stream is full: the plugin's buffer fills
            self.wire.send({"op": "published", "id": message["id"]})

    async def consume_stream(self):
        while True:
            await self.credit.wait()
            got = await self.stream.take.remote(self.session, self.args.batch, 0.2)
            if got:
                self.deliver(len(got), json.dumps(
                    {"op": "events", "events": [["k"] + e for e in got]},
                    separators=(",", ":"), ensure_ascii=False).encode())

    # -- kodosumi's runners

    async def replay_spill(self):
        """What the last bridge spilled and storage did not ack, sent again; a runner whose
        user is not known yet is drained first (and if it is gone, ended as such)."""
        for fid in list(self.spill.batches):
            username = self.spill.usernames.get(fid)
            if not username and fid in self.spill.done:
                username = self.args.default_username
                self.spill.record(["n", fid, self.spill.next_seq.get(fid, 0), username])
            if username:
                for batch in self.spill.pending(fid):
                    self.send_batch(fid, username, *batch, 2)
            elif fid not in self.runners:
                self.runners[fid] = asyncio.ensure_future(self.drain(fid))

    async def discover(self):
        first = True
        while True:
            try:
                # In a thread: with the head away this call waits for it, and the loop must
                # go on (report() notices the head is gone).
                named = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: ray.util.list_named_actors(all_namespaces=True))
            except RayError:
                named = []
            for entry in named:
                fid = entry["name"]
                if entry["namespace"] != self.args.namespace or fid in self.runners:
                    continue
                if fid in self.spill.done or not FID.match(fid):
                    continue
                self.runners[fid] = asyncio.ensure_future(self.drain(fid))
            if first:
                first = False
                mark("first discovery: %d runners" % len(self.runners))
            await asyncio.sleep(self.args.discover_interval)

    def died(self, fid, e):
        return "runner actor %s in namespace %s died before its execution finished: %s" % (
            fid, self.args.namespace, str(e).strip().splitlines()[-1])

    async def drain(self, fid):
        # Spilled events whose user was not known wait here for it (meta, or the end).
        username = self.spill.usernames.get(fid)
        held = [] if username else list(self.spill.pending(fid))
        state = {"username": username, "finished": False, "held": held}
        index = self.drainer_index(fid)
        try:
            handle = ray.get_actor(fid, namespace=self.args.namespace)
            queue = await handle.get_queue.remote()
        except (RayError, ValueError) as e:
            return self.end_runner(fid, state, self.died(fid, e))
        if not state["username"]:
            try:
                state["username"] = await handle.get_username.remote()
            except (RayError, AttributeError):
                pass  # not every runner has it: the meta event names the user
        await self.recover(fid, state, index)
        idle = 0.001
        while True:
            await self.credit.wait()
            expected = self.spill.next_seq.get(fid, 0)
            try:
                size, seq, count, blob, username, finished = await self.drainers[
                    index].drain.remote(fid, queue, self.args.batch, expected)
            except RayError as e:
                try:
                    ray.get_actor(fid, namespace=self.args.namespace)
                except ValueError:
                    return self.end_runner(fid, state, self.died(fid, e))
                await asyncio.sleep(0.1)  # the runner lives: the drainer failed; again
                self.drainers[index] = self.make_drainer(index)
                continue
            if seq > expected:  # a killed bridge's read reached the drainer after this one's
                await self.recover(fid, state, index, seq)
            self.depths[fid] = size - count
            if not count:
                if state["finished"]:
                    try:
                        ray.kill(handle)  # kodosumi's spooler ends a finished runner too
                    except RayError:
                        pass
                    return self.end_runner(fid, state, None)
                await asyncio.sleep(idle)
                idle = min(idle * 2, 0.05)
                continue
            idle = 0.001
            self.drains += 1
            self.drained += count
            self.largest_batch = max(self.largest_batch, count)
            self.take(fid, state, seq, count, blob, username, finished)
            self.drainers[index].release.remote(fid, seq + count)

    async def recover(self, fid, state, index, upto=float("inf")):
        """Takes what the drainer read for an earlier bridge and that bridge did not spill."""
        drainer = self.drainers[index]
        for seq, count, blob in await drainer.holding.remote(fid):
            if self.spill.next_seq.get(fid, 0) <= seq < upto:
                self.take(fid, state, seq, count, blob, *scan(json.loads(blob)))
        drainer.release.remote(fid, self.spill.next_seq.get(fid, 0))

    def take(self, fid, state, seq, count, blob, username, finished):
        """Spills a drained batch, then sends it once the runner's user is known."""
        state["username"] = state["username"] or username
        state["finished"] = state["finished"] or finished
        lines = []
        if state["username"] and self.spill.usernames.get(fid) != state["username"]:
            record = ["n", fid, seq, state["username"]]
            self.spill.apply(record)
            lines.append(Spill.line(record))
        self.spill.add(fid, seq, count, blob)
        lines.append(Spill.batch_line(fid, seq, count, blob))
        self.spill.write(lines)
        state["held"].append((seq, count, blob))
        self.release(fid, state)

    def release(self, fid, state, force=False):
        """Sends a runner's held batches once its user is known (or it ended without one)."""
        if not state["held"]:
            return
        if not state["username"]:
            if not force:
                return
            state["username"] = self.args.default_username
            self.spill.record(["n", fid, self.spill.next_seq.get(fid, 0), state["username"]])
        for batch in state["held"]:
            self.send_batch(fid, state["username"], *batch, 1)
        state["held"] = []

    def end_runner(self, fid, state, error):
        if error is not None and not state["finished"]:
            now = time.time()
            items = [{"timestamp": now, "kind": "error", "payload": error},
                     {"timestamp": now, "kind": "status", "payload": "error"}]
            self.take(fid, state, self.spill.next_seq.get(fid, 0), 2, encode(items), None, True)
        self.release(fid, state, force=True)
        self.spill.record(["d", fid])
        self.drainers[self.drainer_index(fid)].forget.remote(fid)
        self.depths.pop(fid, None)
        self.runners.pop(fid, None)

    # -- figures

    def head_reachable(self):
        host, _, port = self.args.address.rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=2).close()
            return True
        except OSError:
            return False

    async def watch_head(self):
        """Ray's client waits minutes for a head that is gone, and calls to it hang meanwhile;
        this loop touches no Ray call, so it notices at once. The plugin then restarts the
        bridge, which connects once the head is back."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.5)
            if not await loop.run_in_executor(None, self.head_reachable):
                self.wire.send({"op": "fatal",
                                "message": "lost the Ray head at %s" % self.args.address})
                os._exit(4)

    async def report(self):
        while True:
            try:
                self.stream_depth = await asyncio.wait_for(self.stream.depth.remote(), 2)
            except (RayError, asyncio.TimeoutError):
                pass
            self.wire.send({"op": "status", "runners": len(self.runners),
                            "depth": sum(self.depths.values()) + self.stream_depth,
                            "drains": self.drains, "drained": self.drained,
                            "largest_batch": self.largest_batch})
            await asyncio.sleep(0.5)


async def main(args):
    wire = Wire()
    bridge = Bridge(args, wire)
    try:
        bridge.connect()
    except Exception as e:  # noqa: BLE001 - every failure to connect is reported as such
        wire.send({"op": "fatal", "message": str(e).splitlines()[0] if str(e) else repr(e)})
        return 3
    wire.send({"op": "hello", "address": args.address})
    inbox = asyncio.Queue()
    threading.Thread(target=read_frames, args=(asyncio.get_running_loop(), inbox),
                     daemon=True).start()
    asyncio.ensure_future(bridge.warm())
    asyncio.ensure_future(bridge.report())
    asyncio.ensure_future(bridge.watch_head())
    asyncio.ensure_future(bridge.publish())
    while True:
        message = await inbox.get()
        if message is None:
            return 0
        await bridge.handle(message)


def parse():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--address", required=True)
    p.add_argument("--namespace", default="kodosumi")
    p.add_argument("--stream", default="kodo-events")
    p.add_argument("--spill-dir", required=True)
    p.add_argument("--batch", type=int, default=4000)
    p.add_argument("--drainers", type=int, default=2)
    p.add_argument("--capacity", type=int, default=1000000)
    p.add_argument("--max-unacked", type=int, default=100000)
    p.add_argument("--discover-interval", type=float, default=0.5)
    p.add_argument("--default-username", default="kodosumi")
    return p.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
