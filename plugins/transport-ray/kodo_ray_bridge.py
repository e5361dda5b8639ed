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

import argparse
import asyncio
import collections
import json
import os
import re
import socket
import struct
import sys
import threading
import time

import ray
from ray.exceptions import RayActorError, RayError

FINAL_STATUSES = ("finished", "error")
COMPACT_BYTES = 64 << 20  # a spill file past this is rewritten ...
COMPACT_UNACKED = 100000  # ... when it holds fewer unacked events than this
FID = re.compile(r"^[A-Za-z0-9_@-][A-Za-z0-9_.@-]{0,63}$")  # kodo_event's naming rule


# ---- Frames --------------------------------------------------------------------------------


class Wire:
    """Frames to the plugin on stdout; one writer at a time."""

    def __init__(self):
        self.out = sys.stdout.buffer
        self.lock = threading.Lock()

    def send(self, message):
        body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
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


@ray.remote(num_cpus=0)
class Drainer:
    """Makes the destructive reads of runners' queues inside Ray and keeps what it read until
    the bridge has it on disk, so a bridge killed while a read is in flight loses nothing: the
    next bridge takes the rest from here. Positions count a runner's queue items from 0."""

    def __init__(self):
        self.held = {}  # fid -> (position of the first held item, items)

    async def drain(self, fid, queue, n):
        size = await queue.actor.qsize.remote()
        start, held = self.held.setdefault(fid, (0, []))
        items = await queue.actor.get_nowait_batch.remote(min(size, n)) if size else []
        # As [timestamp, kind, payload] here, in the drainer's process: the bridge's is the
        # busier one, and lists travel cheaper than dicts.
        now = time.time()
        items = [[i.get("timestamp", now), i.get("kind", ""), i.get("payload", "")]
                 if isinstance(i, dict) else [now, "", i] for i in items]
        held.extend(items)
        return size, start + len(held) - len(items), items

    async def release(self, fid, upto):
        start, held = self.held.get(fid, (0, []))
        if upto > start:
            del held[: upto - start]
            self.held[fid] = (upto, held)

    async def forget(self, fid):
        self.held.pop(fid, None)

    async def holding(self, fid):
        return self.held.get(fid, (0, []))


# ---- Spill file: kodosumi events drained and not yet acked ------------------------------------


class Spill:
    """An append-only log, a line per record: a batch of drained events ("e"), a batch of acks
    ("a"), a runner done ("d") and a runner's next seq and user ("n"). Written before an event
    is sent, so a killed bridge loses no event it had drained; replayed and compacted at start.
    """

    def __init__(self, directory):
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, "spill.jsonl")
        self.unacked = collections.OrderedDict()  # (fid, seq) -> event
        self.next_seq = {}
        self.usernames = {}
        self.done = set()
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        break  # a line cut by a kill: everything before it counts
                    self.apply(record)
        self.compact()

    def apply(self, record):
        tag = record[0]
        if tag == "e":
            for event in record[1]:
                self.unacked[(event[0], event[2])] = event
                self.next_seq[event[0]] = max(self.next_seq.get(event[0], 0), event[2] + 1)
        elif tag == "a":
            for fid, seq in record[1]:
                self.unacked.pop((fid, seq), None)
        elif tag == "n":
            self.next_seq[record[1]] = record[2]
            if record[3]:
                self.usernames[record[1]] = record[3]
        elif tag == "d":
            self.done.add(record[1])

    def compact(self):
        temporary = self.path + ".new"
        with open(temporary, "w", encoding="utf-8") as f:
            for fid, seq in self.next_seq.items():
                f.write(json.dumps(["n", fid, seq, self.usernames.get(fid)]) + "\n")
            for fid in self.done:
                f.write(json.dumps(["d", fid]) + "\n")
            f.write(json.dumps(["e", list(self.unacked.values())], ensure_ascii=False) + "\n")
        os.replace(temporary, self.path)
        self.file = open(self.path, "a", encoding="utf-8")

    def write(self, records):
        for record in records:
            self.apply(record)
        self.file.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        self.file.flush()  # in the kernel's hands: survives a SIGKILL of this process
        if self.file.tell() > COMPACT_BYTES and len(self.unacked) < COMPACT_UNACKED:
            self.file.close()
            self.compact()  # the log keeps only what is not acked yet


# ---- The bridge ----------------------------------------------------------------------------


def meta_username(payload):
    """kodosumi's meta payload is serialize()d: {"dict": {"username": ...}}."""
    try:
        value = json.loads(payload)
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

    def connect(self):
        host, _, port = self.args.address.rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
        except (OSError, ValueError) as e:
            raise ConnectionError("cannot reach the Ray head at %s: %s" % (self.args.address, e))
        ray.init(address=self.args.address, namespace="kodo", logging_level="error",
                 log_to_driver=False)
        self.drainer = self.make_drainer()
        self.stream = KodoStream.options(
            name=self.args.stream, namespace="kodo", lifetime="detached", get_if_exists=True
        ).remote(self.args.capacity)

    def make_drainer(self):
        return Drainer.options(name=self.args.stream + "-drainer", namespace="kodo",
                               lifetime="detached", get_if_exists=True).remote()

    # -- messages from the plugin

    async def handle(self, message):
        op = message["op"]
        if op == "publish":
            self.publishes.put_nowait(message)
        elif op == "consume":
            if not self.consuming:
                self.consuming = True
                self.spill = Spill(self.args.spill_dir)
                asyncio.ensure_future(self.replay_spill())
                asyncio.ensure_future(self.consume_stream())
                asyncio.ensure_future(self.discover())
        elif op == "ack":
            kodo, runner = [], []
            for source, fid, seq in message["refs"]:
                (kodo if source == "k" else runner).append((fid, seq))
            if runner and self.spill:
                self.spill.write([["a", runner]])
            if kodo:
                await self.stream.ack.remote(kodo)
            self.outstanding -= len(message["refs"])
            if self.outstanding < self.args.max_unacked:
                self.credit.set()

    def deliver(self, rows):
        self.outstanding += len(rows)
        if self.outstanding >= self.args.max_unacked:
            self.credit.clear()
        self.wire.send({"op": "events", "events": rows})

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
                self.deliver([["k"] + e for e in got])

    # -- kodosumi's runners

    async def replay_spill(self):
        rows = []
        for e in self.spill.unacked.values():
            e[1] = e[1] or self.spill.usernames.get(e[0])
            if e[1]:
                rows.append(["r"] + e + [2])
        if rows:
            self.deliver(rows)

    async def discover(self):
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
            await asyncio.sleep(self.args.discover_interval)

    def died(self, fid, e):
        return "runner actor %s in namespace %s died before its execution finished: %s" % (
            fid, self.args.namespace, str(e).strip().splitlines()[-1])

    async def drain(self, fid):
        # Events spilled before their user was known wait here for it (meta, or the end).
        held = [e for e in self.spill.unacked.values() if e[0] == fid and not e[1]]
        state = {"username": self.spill.usernames.get(fid), "finished": False, "held": held}
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
        # What a killed bridge's last read left in the drainer and did not spill.
        start, items = await self.drainer.holding.remote(fid)
        skip = self.spill.next_seq.get(fid, 0) - start
        if len(items) > skip:
            self.take(fid, state, items[max(skip, 0):])
        self.drainer.release.remote(fid, self.spill.next_seq.get(fid, 0))
        idle = 0.001
        while True:
            await self.credit.wait()
            try:
                size, position, items = await self.drainer.drain.remote(fid, queue,
                                                                        self.args.batch)
            except RayError as e:
                try:
                    ray.get_actor(fid, namespace=self.args.namespace)
                except ValueError:
                    return self.end_runner(fid, state, self.died(fid, e))
                await asyncio.sleep(0.1)  # the runner lives: the drainer failed; again
                self.drainer = self.make_drainer()
                continue
            self.depths[fid] = size - len(items)
            if not items:
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
            self.drained += len(items)
            self.largest_batch = max(self.largest_batch, len(items))
            self.take(fid, state, items)
            self.drainer.release.remote(fid, position + len(items))

    def take(self, fid, state, items):
        seq = self.spill.next_seq.get(fid, 0)
        events = []
        for timestamp, kind, payload in items:
            if not isinstance(payload, str):
                payload = json.dumps(payload)
            if kind == "meta" and not state["username"]:
                state["username"] = meta_username(payload)
            if kind == "status" and payload in FINAL_STATUSES:
                state["finished"] = True
            events.append([fid, None, seq, float(timestamp), str(kind), payload])
            seq += 1
        records = [["e", events]]
        if state["username"] and self.spill.usernames.get(fid) != state["username"]:
            self.spill.usernames[fid] = state["username"]
            records.insert(0, ["n", fid, self.spill.next_seq.get(fid, 0), state["username"]])
        self.spill.write(records)
        state["held"].extend(events)
        self.release(fid, state)

    def release(self, fid, state, force=False):
        """Sends a runner's held events once its user is known (or it ended without one)."""
        if not state["held"]:
            return
        if not state["username"]:
            if not force:
                return
            state["username"] = self.args.default_username
        for event in state["held"]:
            event[1] = state["username"]
        self.deliver([["r"] + e + [1] for e in state["held"]])
        state["held"] = []

    def end_runner(self, fid, state, error):
        if error is not None and not state["finished"]:
            now = time.time()
            self.take(fid, state, [[now, "error", error], [now, "status", "error"]])
        self.release(fid, state, force=True)
        self.spill.write([["d", fid]])
        self.drainer.forget.remote(fid)
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
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--capacity", type=int, default=1000000)
    p.add_argument("--max-unacked", type=int, default=100000)
    p.add_argument("--discover-interval", type=float, default=0.5)
    p.add_argument("--default-username", default="kodosumi")
    return p.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
