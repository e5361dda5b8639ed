"""N executions at once on one `kodo-host worker`: launches them through kodo-host serve (one
POST each, all before the first ends), waits until every one reads finished or error, and
samples the worker's RSS meanwhile. The flows are the worker's child processes, so the
worker's own RSS (/proc/PID/status) excludes them.
    python3 bench/temporal_hundred.py http://127.0.0.1:PORT FLOW N WORKER_PID
"""
import json
import sys
import time
import urllib.request


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main():
    base, flow, count, worker = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    started = time.perf_counter()
    fids = []
    for _ in range(count):
        body = json.dumps({"flow": flow, "inputs": {}}).encode()
        request = urllib.request.Request(base + "/api/v1/executions", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        fids.append(json.load(urllib.request.urlopen(request))["fid"])
    peak = rss_mb(worker)
    ended = {}
    while len(ended) < count:
        peak = max(peak, rss_mb(worker))
        for fid in fids:
            if fid in ended:
                continue
            summary = json.load(urllib.request.urlopen(f"{base}/api/v1/executions/{fid}"))
            if summary.get("status") in ("finished", "error"):
                ended[fid] = summary["status"]
        time.sleep(0.2)
    finished = sum(1 for status in ended.values() if status == "finished")
    print(f"kodo-host worker: {count} launched at once, {finished} finished, "
          f"{count - finished} failed, in {time.perf_counter() - started:.1f} s; "
          f"worker peak RSS {peak:.0f} MB (its flows excluded)")


if __name__ == "__main__":
    main()
