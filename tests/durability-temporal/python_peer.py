"""The peer check: Temporal's own Python SDK, as a client of kodo's worker. It starts
AgentWorkflow on kodo's task queue with the fork's job input, queries it, pauses and resumes it
with signals, and reads the result, printing one JSON object of what it saw.
    python_peer.py ADDRESS TASK_QUEUE WORKFLOW_ID [ENTRY_POINT]
(ENTRY_POINT: the flow the job names; kodo-host worker runs the configured flow of that name.)
"""
import asyncio
import json
import os
import sys

from temporalio.client import Client


async def main(address, task_queue, workflow_id, entry_point="peer.flow:run"):
    client = await Client.connect(address, namespace="default")
    job = {
        "fid": workflow_id.removeprefix("kodo-"),
        "username": "peer",
        "app_url": "/peer/app",
        "entry_point": entry_point,
        "panel_url": "/panel",
        "jwt": "peer-token",
        "inputs": {"steps": 40, "step_ms": 50},
        "extra": {"from": "temporalio"},
        "execution_timeout": 600,
    }
    handle = await client.start_workflow(
        "AgentWorkflow", job, id=workflow_id, task_queue=task_queue)
    seen = {"status_at_start": await handle.query("get_status")}
    await handle.signal("pause")
    seen["is_paused_after_pause"] = await handle.query("is_paused")
    seen["status_while_paused"] = await handle.query("get_status")
    await handle.signal("resume")
    seen["is_paused_after_resume"] = await handle.query("is_paused")
    seen["error"] = await handle.query("get_error")
    seen["result"] = await handle.result()
    seen["status_at_end"] = await handle.query("get_status")
    print(json.dumps(seen))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
    # Leave without interpreter finalization: temporalio's Rust runtime threads can race it
    # ("PyGILState_Release ... finalizing", abort) after everything above has been printed.
    sys.stdout.flush()
    os._exit(0)
