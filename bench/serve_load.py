"""Throughput of `hearth serve` under concurrent clients, by --max-batch: starts the server
for each batch size, sends CLIENTS greedy completions of TOKENS tokens at once (different
prompts), and prints the total generated tokens per second and the mean time per answer.
Standard library only.

Usage: python3 bench/serve_load.py [--json] HEARTH_BINARY MODEL [CLIENTS] [TOKENS] [BATCHES]
       (defaults: 8 clients, 64 tokens, batches 1,4,8); --json prints one JSON object
       (bench/gpu.sh) instead of a markdown table.
"""

import http.client
import json
import socket
import subprocess
import sys
import threading
import time

as_json = "--json" in sys.argv
args = [a for a in sys.argv[1:] if a != "--json"]
hearth, model = args[0], args[1]
clients = int(args[2]) if len(args) > 2 else 8
tokens = int(args[3]) if len(args) > 3 else 64
batches = [int(b) for b in (args[4] if len(args) > 4 else "1,4,8").split(",")]
rows = []
say = (lambda *a, **k: None) if as_json else print
PROMPTS = ["The capital of France is", "Once upon a time, in a small village,", "To bake bread, you need", "The best way to learn a language is",
           "In 1969, astronauts", "A good customer-service answer", "Photosynthesis is the process", "My favourite programming language is"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port, body):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    c.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = json.loads(c.getresponse().read())
    return r["usage"]["completion_tokens"]


say(f"{clients} clients at once, {tokens} tokens each (greedy; an answer may end early at EOS), {model}")
say("| --max-batch | generated tokens/s | mean seconds per answer | largest batch |")
say("|---|---|---|---|")
for batch in batches:
    port = free_port()
    server = subprocess.Popen([hearth, "serve", model, "--port", str(port), "--max-batch", str(batch), "--ctx", "512"], stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/health")
                c.getresponse().read()
                break
            except OSError:
                # (a server that exited, say on a model it cannot load, ends the bench now
                # instead of at the step's time limit)
                if server.poll() is not None:
                    sys.exit(f"hearth serve exited with {server.returncode} before it answered (--max-batch {batch})")
                time.sleep(0.2)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/v1/models")
        name = json.loads(c.getresponse().read())["data"][0]["id"]
        post(port, {"model": name, "prompt": "warm up", "max_tokens": 4})  # kernels compiled
        done, times = [], []

        def one(i):
            t = time.time()
            done.append(post(port, {"model": name, "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": tokens, "temperature": 0}))
            times.append(time.time() - t)
        start = time.time()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.time() - start
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/health")
        largest = json.loads(c.getresponse().read())["largest_batch"]
        rows.append({"max_batch": batch, "tokens_per_s": sum(done) / wall, "mean_s": sum(times) / len(times), "largest_batch": largest})
        say(f"| {batch} | {sum(done) / wall:.1f} | {sum(times) / len(times):.1f} | {largest} |", flush=True)
    finally:
        server.terminate()
        server.wait()
if as_json:
    print(json.dumps({"clients": clients, "tokens": tokens, "rows": rows}))
