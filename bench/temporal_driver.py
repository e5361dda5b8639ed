"""Starts N AgentWorkflows on QUEUE, at most CONCURRENCY in flight, waits for every result and
prints the rate; the same driver for kodo's worker and for the Python SDK's.
    temporal_driver.py ADDRESS QUEUE N CONCURRENCY
"""
import asyncio
import os
import sys
import time
import uuid

from temporalio.client import Client


async def main(address, queue, count, concurrency):
    client = await Client.connect(address)
    gate = asyncio.Semaphore(concurrency)
    run = uuid.uuid4().hex[:8]
    statuses = {}

    async def one(i):
        async with gate:
            fid = f"{run}-{i}"
            job = {"fid": fid, "username": "bench", "app_url": "", "entry_point": "bench",
                   "panel_url": "", "jwt": "", "inputs": {}, "extra": {},
                   "execution_timeout": 600}
            handle = await client.start_workflow("AgentWorkflow", job, id=f"kodo-{fid}",
                                                 task_queue=queue)
            result = await handle.result()
            statuses[result["status"]] = statuses.get(result["status"], 0) + 1

    started = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(count)))
    elapsed = time.monotonic() - started
    print(f"{count} workflows, {concurrency} at once: {elapsed:.2f} s, "
          f"{count / elapsed:.1f} workflows/s, results {statuses}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    # No interpreter finalization: temporalio's Rust threads can race it and abort.
    sys.stdout.flush()
    os._exit(0)
