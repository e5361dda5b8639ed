"""Temporal's Python SDK worker running the same shape as kodo's: workflow AgentWorkflow with one
activity execute_agent (the fork's options) that returns after JOB_MS (0: at once). Prints
"ready"; at SIGTERM it stops and prints its peak RSS.
    temporal_py_worker.py ADDRESS QUEUE JOB_MS
"""
import asyncio
import resource
import signal
import sys
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import Worker

JOB_MS = int(sys.argv[3])


@activity.defn(name="execute_agent")
async def execute_agent(job: dict) -> dict:
    if JOB_MS:
        activity.heartbeat({"step": 0})
        await asyncio.sleep(JOB_MS / 1000)
    return {"fid": job["fid"], "status": "finished", "error": None}


@workflow.defn(name="AgentWorkflow")
class AgentWorkflow:
    @workflow.run
    async def run(self, job: dict) -> dict:
        return await workflow.execute_activity(
            "execute_agent", job,
            start_to_close_timeout=timedelta(seconds=3600),
            heartbeat_timeout=timedelta(seconds=120),
            retry_policy=RetryPolicy(maximum_attempts=3, initial_interval=timedelta(seconds=5),
                                     backoff_coefficient=2.0,
                                     maximum_interval=timedelta(seconds=60)))


async def main(address, queue):
    client = await Client.connect(address)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with Worker(client, task_queue=queue, workflows=[AgentWorkflow],
                      activities=[execute_agent], max_concurrent_activities=100):
        print("ready", flush=True)
        await stop.wait()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS {peak_kb} kB", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
