// Headless Chromium with WebGPU on SwiftShader (shared/TESTING.md), driven by playwright-core.
import { chromium } from "playwright-core";

const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-webgpu", "--disable-quic",
  "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--remote-debugging-pipe"];

/** `extra`: more Chromium flags (the test maps a LAN-like host name to 127.0.0.1). */
export function launch(extra = []) {
  return chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", ignoreDefaultArgs: true, args: [...FLAGS, ...extra] });
}

/** Copies the page's console and errors to ours, prefixed. */
export function echo(page, tag = "page") {
  page.on("console", (m) => console.log(`[${tag}] ${m.text()}`));
  page.on("pageerror", (e) => console.log(`[${tag} error] ${e.message}`));
}

/** A browser with a profile on disk (`dir`), as a person's: its storage quota is the disk's. */
export function launchProfile(dir, extra = []) {
  return chromium.launchPersistentContext(dir, { executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", ignoreDefaultArgs: true, args: [...FLAGS, ...extra] });
}
