// Browser storage for the worker: downloaded model files and the latest checkpoint live in
// the Cache API, so a reload neither downloads again nor loses a run.

const MODELS = "hearth-models";
const CHECKPOINTS = "hearth-checkpoints";
const KEY = (path) => new URL(path, self.location.origin).href;

/** Bytes of `url`, from the cache or downloaded with `progress(done, total)` and cached. */
export async function fetchCached(url, progress) {
  return new Uint8Array(await (await cachedBlob(url, progress)).arrayBuffer());
}

/**
 * `url` as a Blob of the cache: downloaded straight into the cache (with `progress(done,
 * total)`) when missing, so that a model's weights never sit in JavaScript or wasm memory
 * whole; the worker reads them a tensor at a time (worker.js, `weightReader`).
 */
export async function cachedBlob(url, progress) {
  const cache = await caches.open(MODELS);
  let hit = await cache.match(url);
  if (!hit) {
    const res = await fetch(url);
    if (!res.ok) throw new Error(`${url}: HTTP ${res.status} ${res.statusText}`);
    const total = Number(res.headers.get("content-length")) || 0;
    let done = 0;
    const counted = res.body.pipeThrough(new TransformStream({
      transform(chunk, out) {
        done += chunk.length;
        progress(done, total);
        out.enqueue(chunk);
      },
    }));
    await cache.put(url, new Response(counted)).catch((e) => {
      throw new Error(`${url}: the browser's storage did not take it after ${done} bytes (${e.message}); it may be out of space (a private window has little)`);
    });
    hit = await cache.match(url);
    if (total && (await hit.clone().blob()).size !== total) {
      await cache.delete(url);
      throw new Error(`${url}: the download stopped after ${done} of ${total} bytes; load it again`);
    }
  }
  return hit.blob();
}

/** Whether `url` answers (HEAD, or a cached copy). */
export async function exists(url) {
  if (await (await caches.open(MODELS)).match(url)) return true;
  const res = await fetch(url, { method: "HEAD" });
  return res.ok;
}

const LOCAL = (name, file) => KEY(`/__local__/${encodeURIComponent(name)}/${encodeURIComponent(file)}`);

/** Keeps files the user picked (File objects, streamed to the cache), so a reloaded tab can load the model again. */
export async function keepLocal(name, files) {
  const cache = await caches.open(MODELS);
  for (const file of files) await cache.put(LOCAL(name, file.name), new Response(file));
}

/** Files kept by keepLocal, as Blobs. */
export async function readLocal(name, fileNames) {
  const cache = await caches.open(MODELS);
  const out = [];
  for (const file of fileNames) {
    const hit = await cache.match(LOCAL(name, file));
    if (!hit) throw new Error(`${name}/${file} is no longer in the browser's storage; load the model again`);
    out.push([file, await hit.blob()]);
  }
  return out;
}

/**
 * Saves a checkpoint: its files go under a folder named by the step, then run.json points
 * at that folder, then the previous folder is deleted. A tab closed half-way keeps the old one.
 */
export async function saveCheckpoint(files, run) {
  const cache = await caches.open(CHECKPOINTS);
  const dir = `/__checkpoint__/${run.step}-${Date.now()}/`;
  for (const [name, bytes] of files) await cache.put(KEY(dir + name), new Response(bytes));
  const old = await loadRun();
  await cache.put(KEY("/__checkpoint__/run.json"), new Response(JSON.stringify({ ...run, dir, files: files.map(([n]) => n) })));
  if (old?.dir && old.dir !== dir) for (const n of old.files) await cache.delete(KEY(old.dir + n));
}

/** The saved run's description (model, settings, data, metrics, step), or null. */
export async function loadRun() {
  const hit = await (await caches.open(CHECKPOINTS)).match(KEY("/__checkpoint__/run.json"));
  return hit ? hit.json() : null;
}

export async function checkpointFiles(run) {
  const cache = await caches.open(CHECKPOINTS);
  const out = [];
  for (const n of run.files) {
    const hit = await cache.match(KEY(run.dir + n));
    if (!hit) throw new Error(`the saved checkpoint lacks ${n}`);
    out.push([n, new Uint8Array(await hit.arrayBuffer())]);
  }
  return out;
}

export async function discardRun() {
  await caches.delete(CHECKPOINTS);
}
