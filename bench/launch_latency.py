"""Launch to first stored event, as a client sees it: POST /api/v1/executions, then poll the
execution's events until the first is there. Prints p50 and p99 over N launches, one at a time.
    python3 bench/launch_latency.py http://127.0.0.1:PORT FLOW N LABEL
"""
import json
import sys
import time
import urllib.error
import urllib.request


def main():
    base, flow, count, label = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    times = []
    for _ in range(count):
        body = json.dumps({"flow": flow, "inputs": {}}).encode()
        started = time.perf_counter()
        request = urllib.request.Request(base + "/api/v1/executions", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        fid = json.load(urllib.request.urlopen(request))["fid"]
        while True:
            try:
                page = json.load(urllib.request.urlopen(
                    f"{base}/api/v1/executions/{fid}/events?limit=1"))
                if page.get("events"):
                    break
            except urllib.error.HTTPError:
                pass  # not known yet
            time.sleep(0.002)
        times.append(time.perf_counter() - started)
    times.sort()
    p50 = times[len(times) // 2] * 1000
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))] * 1000
    print(f"{label}: launch to first stored event over {count} launches: "
          f"p50 {p50:.1f} ms, p99 {p99:.1f} ms")


if __name__ == "__main__":
    main()
