// A static file server for dist/ (any static server works; this one needs nothing installed).
import { createServer } from "node:http";
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { extname, join, normalize } from "node:path";

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript",
  ".wasm": "application/wasm",
  ".css": "text/css",
  ".json": "application/json",
};

/**
 * Serves `root` on a free localhost port; `mounts` maps URL prefixes to other folders (or a
 * path to a file), the first that matches wins (the browser test serves the page from a sub-path, as GitHub Pages
 * does, and the model fixtures as its models/ folder). Resolves to { url, port, close }.
 */
export function serve(root, mounts = {}) {
  const server = createServer(async (req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname)).replace(/^(\.\.[/\\])+/, "");
    const [prefix, dir] = Object.entries(mounts).find(([p]) => path.startsWith(p)) ?? ["/", root];
    const rel = path.slice(prefix.length);
    // a prefix without a closing slash names one file
    const file = !prefix.endsWith("/") ? dir : join(dir, rel === "" || rel.endsWith("/") ? rel + "index.html" : rel);
    // streamed: a model's weights may pass Node's 2 GiB limit on one buffer
    const info = await stat(file).catch(() => null);
    if (!info?.isFile()) return res.writeHead(404).end("not found");
    res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "content-length": info.size });
    if (req.method === "HEAD") return res.end();
    createReadStream(file).pipe(res);
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () =>
      resolve({ url: `http://127.0.0.1:${server.address().port}/`, port: server.address().port, close: () => server.close() })));
}
