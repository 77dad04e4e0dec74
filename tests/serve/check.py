"""`hearth serve` checked with the clients people use: the openai package, curl, plain HTTP.

Serves the tiny llama fixture with two PEFT adapters and checks, against `hearth generate`
on the same model and adapter (greedy, and sampled with a seed):
- chat and completions, streamed and not, the base and both adapters alternating;
- stop strings, usage, /v1/models, /health while generating;
- 32 concurrent clients with mixed adapters; 12 of one adapter, decoded together; a client
  that disconnects mid-stream;
- bad input (each a 4xx with an OpenAI error object, and the server keeps serving);
- --api-key, and refusing a non-loopback --host without one;
- SIGTERM: the requests in progress finish, queued ones get 503, the process exits 0.

With a second argument (SmolLM2-135M-Instruct, a .gguf or an HF folder), also checks a
real model's chat answer, which ends at its end-of-turn token, against `hearth generate`.

Usage: python check.py HEARTH_BINARY [SMOLLM2]
"""

import array
import http.client
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai

HEARTH = sys.argv[1]
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIX = os.path.join(ROOT, "tests", "fixtures")
MODEL = os.path.join(FIX, "tiny-llama")
# two adapters made below from PEFT's trained one, with random weights large enough that
# each answers differently from the base and from the other
ADAPTER_NAMES = ["trained", "hearth"]
ADAPTERS = {}
BASE = "tiny-llama"
CTX = 256
CHAT_PROMPT = "What are your opening hours?"
TEXT_PROMPT = "The shop opens at"
N = 12  # tokens per answer

failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def random_adapter(src, dst, seed, scale=0.3):
    """A copy of the PEFT adapter `src` with every tensor drawn uniformly from ±scale."""
    rng = random.Random(seed)
    os.makedirs(dst, exist_ok=True)
    shutil.copy(os.path.join(src, "adapter_config.json"), dst)
    with open(os.path.join(src, "adapter_model.safetensors"), "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    data = bytearray(raw[8 + n:])
    for name, t in header.items():
        if name == "__metadata__":
            continue
        assert t["dtype"] == "F32", name
        a, b = t["data_offsets"]
        values = array.array("f", (rng.uniform(-scale, scale) for _ in range((b - a) // 4)))
        data[a:b] = values.tobytes()
    with open(os.path.join(dst, "adapter_model.safetensors"), "wb") as f:
        f.write(raw[:8 + n] + bytes(data))
    return dst


def reference(model, chat, prompt, extra=(), path=MODEL, n=N):
    """`hearth generate --json` for the same model, adapter and settings."""
    cmd = [HEARTH, "generate", path, "--ctx", str(CTX), "--prompt", prompt, "--max-new-tokens", str(n), "--json", *extra]
    if model != BASE:
        cmd += ["--adapter", ADAPTERS[model]]
    if chat:
        cmd.append("--chat")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


class Server:
    def __init__(self, *extra, model=MODEL, adapters=True):
        self.port = free_port()
        self.log = open(os.path.join(OUT, f"serve-{self.port}.log"), "w")
        cmd = [HEARTH, "serve", model, "--ctx", str(CTX), "--port", str(self.port), *extra]
        for name, path in ADAPTERS.items() if adapters else ():
            cmd += ["--adapter", f"{name}={path}"]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"hearth serve exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise SystemExit("hearth serve did not answer /health within 180 s")

    def conn(self, timeout=300):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def get(self, path, headers=None):
        c = self.conn(10)
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status, json.loads(body) if body else None

    def post(self, path, body, headers=None):
        c = self.conn()
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            c.request("POST", path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered before reading everything (a body over its limit)
        r = c.getresponse()
        text = r.read()
        c.close()
        return r.status, json.loads(text) if text else None

    def client(self, key="none"):
        return openai.OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key=key, max_retries=0, timeout=600)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)


def chat(client, model, stream=False, **kw):
    args = {"model": model, "messages": [{"role": "user", "content": CHAT_PROMPT}], "max_tokens": N, "temperature": 0, **kw}
    if not stream:
        r = client.chat.completions.create(**args)
        return r.choices[0].message.content, r.choices[0].finish_reason, r.usage
    text, finish, usage = "", None, None
    for chunk in client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **args):
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    return text, finish, usage


def complete(client, model, stream=False, **kw):
    args = {"model": model, "prompt": TEXT_PROMPT, "max_tokens": N, "temperature": 0, **kw}
    if not stream:
        r = client.completions.create(**args)
        return r.choices[0].text, r.choices[0].finish_reason
    text, finish = "", None
    for chunk in client.completions.create(stream=True, **args):
        for c in chunk.choices:
            text += c.text
            finish = c.finish_reason or finish
    return text, finish


def sse_texts(raw):
    """The content of each `data:` line of a chat stream, and whether it ended with [DONE]."""
    lines = [l[len("data: "):] for l in raw.splitlines() if l.startswith("data: ")]
    done = bool(lines) and lines[-1] == "[DONE]"
    chunks = [json.loads(l) for l in lines if l != "[DONE]"]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]), done


def main():
    src = os.path.join(FIX, "peft", "tiny-llama", "trained")
    for seed, name in enumerate(ADAPTER_NAMES):
        ADAPTERS[name] = random_adapter(src, os.path.join(OUT, "adapters", name), seed)
    models = [BASE, *ADAPTERS]
    print("references from hearth generate ...", flush=True)
    ref_chat = {m: reference(m, True, CHAT_PROMPT) for m in models}
    ref_text = {m: reference(m, False, TEXT_PROMPT) for m in models}
    sampled = ["--temperature", "0.8", "--top-p", "0.9", "--seed", "7"]
    ref_sampled = reference("trained", True, CHAT_PROMPT, sampled)
    check(len({ref_chat[m]["text"] for m in models}) == 3, "the base and the two adapters answer differently (else the checks below prove little)")

    server = Server()
    try:
        client = server.client()
        check([m.id for m in client.models.list().data] == models, "/v1/models lists the base and the adapters")

        # the base and the adapters alternating, through the openai package
        for m in [*models, "trained", BASE, "hearth", "trained"]:
            for stream in (False, True):
                text, finish, usage = chat(client, m, stream)
                want = ref_chat[m]
                check(text == want["text"] and finish == "length" and usage.completion_tokens == len(want["ids"]),
                      f"chat {m} {'streamed' if stream else 'whole'} equals hearth generate --chat")
        for m in models:
            for stream in (False, True):
                text, finish = complete(client, m, stream)
                check(text == ref_text[m]["text"] and finish == "length", f"completion {m} {'streamed' if stream else 'whole'} equals hearth generate")

        # sampling with a seed is the CLI's, and repeatable
        args = dict(temperature=0.8, top_p=0.9, seed=7)
        a = chat(client, "trained", **args)[0]
        b = chat(client, "trained", stream=True, **args)[0]
        check(a == b == ref_sampled["text"], "a seeded sampled answer equals hearth generate --temperature 0.8 --top-p 0.9 --seed 7, twice")

        # stop strings cut the text, streamed or not, and no piece of one is streamed
        full = ref_text[BASE]["text"]
        stop = full[len(full) // 2:len(full) // 2 + 2]
        want = full[:full.find(stop)]
        for stream in (False, True):
            text, finish = complete(client, BASE, stream, stop=[stop])
            check(text == want and finish == "stop", f"stop={stop!r} {'streamed' if stream else 'whole'} ends the text before it")

        # curl, as the README shows it
        body = json.dumps({"model": "hearth", "messages": [{"role": "user", "content": CHAT_PROMPT}], "max_tokens": N, "temperature": 0})
        url = f"http://127.0.0.1:{server.port}/v1/chat/completions"
        out = subprocess.run(["curl", "-sS", url, "-H", "Content-Type: application/json", "-d", body], check=True, capture_output=True, text=True).stdout
        check(json.loads(out)["choices"][0]["message"]["content"] == ref_chat["hearth"]["text"], "curl: a chat answer equals hearth generate")
        streamed = json.loads(body)
        streamed["stream"] = True
        out = subprocess.run(["curl", "-sSN", url, "-H", "Content-Type: application/json", "-d", json.dumps(streamed)], check=True, capture_output=True, text=True).stdout
        text, done = sse_texts(out)
        check(text == ref_chat["hearth"]["text"] and done, "curl -N: the streamed chat equals hearth generate and ends with [DONE]")

        # 32 clients at once, mixed adapters and endpoints
        def one(i):
            m = models[i % 3]
            c = server.client()
            if i % 2:
                return chat(c, m, stream=i % 4 == 1)[0] == ref_chat[m]["text"]
            return complete(c, m, stream=i % 4 == 2)[0] == ref_text[m]["text"]
        start = time.time()
        with ThreadPoolExecutor(32) as pool:
            results = list(pool.map(one, range(32)))
        check(all(results), f"32 concurrent clients, mixed adapters: {sum(results)} of 32 complete and correct ({time.time() - start:.1f} s)")
        # requests for one adapter are decoded together (--max-batch 4 by default), each
        # still getting what it gets alone
        def same(i):
            c = server.client()
            return chat(c, "trained")[0] == ref_chat["trained"]["text"] if i % 2 else complete(c, "trained", stream=i % 4 == 2)[0] == ref_text["trained"]["text"]
        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(same, range(12)))
        largest = server.get("/health")[1]["largest_batch"]
        check(all(results) and 2 <= largest <= 4, f"12 concurrent clients of one adapter: {sum(results)} of 12 correct, up to {largest} decoded together (--max-batch 4)")

        # /health answers while a long answer is generated, and a client that leaves frees the GPU
        c = server.conn()
        c.request("POST", "/v1/completions", body=json.dumps({"model": "trained", "prompt": TEXT_PROMPT, "max_tokens": 200, "temperature": 0, "stream": True}),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        r.fp.readline()  # the first chunk is out: the request is running
        t = time.time()
        status, health = server.get("/health")
        # (running 1: it answered while the request generated, not after the GPU was done; no
        # bound on its time, which a busy 2-core machine stretches)
        check(status == 200 and (health or {}).get("running") == 1, f"/health answers while a request generates ({status}, running {(health or {}).get('running')}, {time.time() - t:.2f} s)")
        cancelled = health["cancelled"]
        c.sock.shutdown(socket.SHUT_RDWR)
        c.close()
        deadline = time.time() + 10
        while time.time() < deadline:
            health = server.get("/health")[1]
            if health["cancelled"] > cancelled and health["running"] == 0:
                break
            time.sleep(0.1)
        check(health["cancelled"] > cancelled and health["running"] == 0, f"a client that disconnects mid-stream frees the GPU ({time.time() - t:.1f} s)")

        # bad input: a 4xx with an OpenAI error object each time
        def bad(path, body, status, what, param=None, code=None):
            got, err = server.post(path, body)
            e = (err or {}).get("error") or {}
            ok = got == status and e.get("message") and e.get("type") and (param is None or e.get("param") == param) and (code is None or e.get("code") == code)
            check(bool(ok), f"{what}: {got} {e.get('message', err)!s:.150}")
        msgs = [{"role": "user", "content": "hi"}]
        bad("/v1/chat/completions", b'{"model": "tiny-llama", "messages": [', 400, "malformed JSON")
        bad("/v1/chat/completions", {"model": "nope", "messages": msgs}, 404, "an unknown model", "model", "model_not_found")
        bad("/v1/chat/completions", {"model": BASE, "messages": msgs, "max_tokens": -1}, 400, "max_tokens -1", "max_tokens")
        bad("/v1/chat/completions", {"model": BASE, "messages": msgs, "max_tokens": 10**9}, 400, "max_tokens 10^9", code="context_length_exceeded")
        bad("/v1/completions", {"model": BASE, "prompt": "word " * 400, "max_tokens": 4}, 400, "a prompt longer than the context", code="context_length_exceeded")
        bad("/v1/chat/completions", json.dumps({"model": BASE, "messages": [{"role": "user", "content": "x" * (10 << 20)}]}).encode(), 413, "a 10 MB body")
        bad("/v1/chat/completions", {"model": BASE}, 400, "no messages")
        bad("/v1/chat/completions", {"model": BASE, "messages": []}, 400, "empty messages", "messages")
        bad("/v1/chat/completions", {"model": BASE, "messages": [{"role": "tool", "content": "x"}]}, 400, "an unknown role", "messages")
        bad("/v1/chat/completions", {"model": BASE, "messages": msgs, "temperature": "hot"}, 400, "a temperature that is not a number")
        bad("/v1/chat/completions", {"model": BASE, "messages": msgs, "temperature": 5}, 400, "temperature 5", "temperature")
        bad("/v1/chat/completions", {"model": BASE, "messages": msgs, "n": 2}, 400, "n 2", "n")
        bad("/v1/completions", {"model": BASE, "prompt": ""}, 400, "an empty prompt", "prompt")
        bad("/v1/nothing", {}, 404, "an unknown route")
        status, err = server.get("/v1/chat/completions")
        check(status == 405 and err["error"]["message"], "GET on a POST route: 405 with an error object")
        try:
            chat(client, "nope")
            check(False, "the openai package raises NotFoundError for an unknown model")
        except openai.NotFoundError as e:
            check(e.code == "model_not_found", "the openai package raises NotFoundError for an unknown model")
        check(chat(client, "hearth")[0] == ref_chat["hearth"]["text"], "after the bad requests the server still answers correctly")
    finally:
        # SIGTERM with one request running and several queued: the running one finishes,
        # the queued ones get 503 (or were served before the signal), the server exits 0
        results = []

        def one_long(i):
            status, body = server.post("/v1/completions", {"model": models[i % 3], "prompt": TEXT_PROMPT, "max_tokens": 200, "temperature": 0})
            finished = status == 200 and body["choices"][0]["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 200
            results.append("served" if finished else "refused" if status == 503 else f"{status} {body}")
        threads = [threading.Thread(target=one_long, args=(i,)) for i in range(8)]
        for th in threads:
            th.start()
        # the signal comes once several requests wait and every one has reached the server
        # (running, queued or answered): one still connecting then would meet a closed port
        def ready():
            health = server.get("/health")[1]
            return health["queued"] >= 4 and health["queued"] + health["running"] + len(results) == 8
        deadline = time.time() + 30
        while time.time() < deadline and not ready():
            time.sleep(0.02)
        server.proc.send_signal(signal.SIGTERM)
        for th in threads:
            th.join(120)
        try:
            code = server.proc.wait(60)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            code = "still running after 60 s"
        check(len(results) == 8 and set(results) == {"served", "refused"},
              f"SIGTERM: the running request finishes whole, the queued ones get 503 ({results.count('served')} served, {results.count('refused')} refused, {[r for r in results if r not in ('served', 'refused')]})")
        check(code == 0, f"SIGTERM: the server exits 0 ({code})")

    # an API key
    keyed = Server("--api-key", "s3cret")
    try:
        try:
            keyed.client().models.list()
            check(False, "--api-key: a request without the key gets 401")
        except openai.AuthenticationError:
            check(True, "--api-key: a request without the key gets 401")
        check(chat(keyed.client("s3cret"), "trained")[0] == ref_chat["trained"]["text"], "--api-key: with the key, the answer is right")
    finally:
        keyed.stop()
    r = subprocess.run([HEARTH, "serve", MODEL, "--host", "0.0.0.0", "--port", str(free_port())], capture_output=True, text=True, timeout=60)
    check(r.returncode != 0 and "--api-key" in r.stderr, "--host 0.0.0.0 without --api-key is refused")

    if len(sys.argv) > 2:
        smol = sys.argv[2]
        want = reference(BASE, True, CHAT_PROMPT, path=smol, n=64)
        real = Server("--name", "smollm2", model=smol, adapters=False)
        try:
            text, finish, usage = chat(real.client(), "smollm2", max_tokens=64)
        finally:
            real.stop()
        check(text == want["text"] and finish == ("stop" if len(want["ids"]) < 64 else "length") and usage.completion_tokens == len(want["ids"]),
              f"SmolLM2: the chat answer equals hearth generate --chat ({text!r:.80})")

    if failures:
        print(f"serve check: {len(failures)} failed", flush=True)
        sys.exit(1)
    print("serve check: all passed", flush=True)


OUT = os.environ.get("HEARTH_SERVE_LOGS") or os.path.join(ROOT, "target", "serve")
os.makedirs(OUT, exist_ok=True)
main()
