// A static file server for dist/ (any static server works; this one needs nothing installed).
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
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
    try {
      const body = await readFile(file);
      res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "content-length": body.length });
      res.end(req.method === "HEAD" ? undefined : body);
    } catch {
      res.writeHead(404).end("not found");
    }
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () =>
      resolve({ url: `http://127.0.0.1:${server.address().port}/`, port: server.address().port, close: () => server.close() })));
}
