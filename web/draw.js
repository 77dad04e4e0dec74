// Pictures for the page, as SVG: the loss chart, the memory split and the LoRA shapes.

const NS = "http://www.w3.org/2000/svg";

function el(name, attrs = {}, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

export const mib = (b) => (b >= 1 << 30 ? `${(b / (1 << 30)).toFixed(2)} GiB` : `${(b / (1 << 20)).toFixed(1)} MiB`);

function niceTicks(lo, hi, n) {
  const span = hi - lo || 1;
  const step = 10 ** Math.floor(Math.log10(span / n));
  const mult = [1, 2, 5, 10].find((m) => span / (m * step) <= n) * step;
  const ticks = [];
  for (let t = Math.ceil(lo / mult) * mult; t <= hi + 1e-12; t += mult) ticks.push(+t.toPrecision(6));
  return ticks;
}

/**
 * The loss chart: train loss per step and validation loss per evaluation. Each point is a
 * <circle> with data-step/data-loss, so tests (and curious people) can read the values.
 */
export function lossChart(container, metrics, totalSteps) {
  const W = 640, H = 260, L = 48, R = 110, T = 12, B = 32;
  const train = metrics.filter((m) => m.loss !== undefined);
  const val = metrics.filter((m) => m.val_loss !== undefined);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "loss per step" });
  const all = [...train.map((m) => m.loss), ...val.map((m) => m.val_loss)];
  if (!all.length) {
    svg.append(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis" }, "The loss appears here as training runs."));
    container.replaceChildren(svg);
    return;
  }
  const lo = Math.min(...all), hi = Math.max(...all);
  const pad = (hi - lo) * 0.08 || 0.1;
  const y0 = lo - pad, y1 = hi + pad;
  const xMax = Math.max(totalSteps || 1, ...metrics.map((m) => m.step));
  const x = (s) => L + (s / xMax) * (W - L - R);
  const y = (v) => T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);
  for (const t of niceTicks(y0, y1, 5)) {
    svg.append(el("line", { x1: L, x2: W - R, y1: y(t), y2: y(t), class: "grid" }));
    svg.append(el("text", { x: L - 6, y: y(t) + 4, "text-anchor": "end", class: "axis" }, String(t)));
  }
  for (const t of niceTicks(0, xMax, 8)) svg.append(el("text", { x: x(t), y: H - 12, "text-anchor": "middle", class: "axis" }, String(t)));
  svg.append(el("text", { x: (L + W - R) / 2, y: H - 1, "text-anchor": "middle", class: "axis" }, "step"));
  const series = [
    [train, "loss", "train", "train loss"],
    [val, "val_loss", "val", "validation loss"],
  ];
  series.forEach(([points, key, cls, label], i) => {
    if (!points.length) return;
    svg.append(el("polyline", { points: points.map((m) => `${x(m.step)},${y(m[key])}`).join(" "), class: `line ${cls}` }));
    for (const m of points) {
      const c = el("circle", { cx: x(m.step), cy: y(m[key]), r: 3, class: `point ${cls}`, "data-step": m.step, "data-loss": m[key] });
      c.append(el("title", {}, `step ${m.step}: ${label} ${m[key].toFixed(4)}`));
      svg.append(c);
    }
    svg.append(el("line", { x1: W - R + 10, x2: W - R + 28, y1: T + 10 + i * 18, y2: T + 10 + i * 18, class: `line ${cls}` }));
    svg.append(el("text", { x: W - R + 32, y: T + 14 + i * 18, class: "axis" }, label));
  });
  container.replaceChildren(svg);
}

/**
 * Preference tuning's progress: the reward margin (chosen − rejected, left axis) and the
 * share of pairs whose chosen answer the adapter prefers (accuracy, right axis, 0 to 1),
 * per step. Points carry data-step/data-margin/data-accuracy; the label says the latest.
 */
export function rewardChart(container, metrics, totalSteps) {
  const W = 640, H = 220, L = 48, R = 110, T = 12, B = 32;
  const pts = metrics.filter((m) => m.margin !== undefined);
  const last = pts[pts.length - 1];
  const summary = last
    ? `reward margin and accuracy per step; at step ${last.step}: margin ${last.margin.toFixed(3)}, accuracy ${(100 * last.accuracy).toFixed(0)} %`
    : "reward margin and accuracy per step";
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": summary });
  if (!pts.length) {
    container.replaceChildren(svg);
    return;
  }
  const lo = Math.min(0, ...pts.map((m) => m.margin)), hi = Math.max(...pts.map((m) => m.margin), 1e-3);
  const xMax = Math.max(totalSteps || 1, ...pts.map((m) => m.step));
  const x = (s) => L + (s / xMax) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  const ya = (a) => T + (1 - a) * (H - T - B);
  for (const t of niceTicks(lo, hi, 4)) {
    svg.append(el("line", { x1: L, x2: W - R, y1: y(t), y2: y(t), class: "grid" }));
    svg.append(el("text", { x: L - 6, y: y(t) + 4, "text-anchor": "end", class: "axis" }, String(t)));
  }
  for (const a of [0, 0.5, 1]) svg.append(el("text", { x: W - R + 6, y: ya(a) + 4, class: "axis" }, `${a * 100} %`));
  for (const t of niceTicks(0, xMax, 8)) svg.append(el("text", { x: x(t), y: H - 12, "text-anchor": "middle", class: "axis" }, String(t)));
  svg.append(el("text", { x: (L + W - R) / 2, y: H - 1, "text-anchor": "middle", class: "axis" }, "step"));
  const series = [
    ["margin", y, "train", "reward margin"],
    ["accuracy", ya, "val", "accuracy"],
  ];
  series.forEach(([key, f, cls, label], i) => {
    svg.append(el("polyline", { points: pts.map((m) => `${x(m.step)},${f(m[key])}`).join(" "), class: `line ${cls}` }));
    for (const m of pts) {
      const c = el("circle", { cx: x(m.step), cy: f(m[key]), r: 3, class: `point ${cls}`, "data-step": m.step, [`data-${key}`]: m[key] });
      c.append(el("title", {}, `step ${m.step}: ${label} ${key === "accuracy" ? `${(100 * m[key]).toFixed(0)} %` : m[key].toFixed(4)}`));
      svg.append(c);
    }
    svg.append(el("line", { x1: W - R + 44, x2: W - R + 60, y1: T + 40 + i * 18, y2: T + 40 + i * 18, class: `line ${cls}` }));
    svg.append(el("text", { x: W - R + 62, y: T + 44 + i * 18, class: "axis" }, label === "reward margin" ? "margin" : label));
  });
  container.replaceChildren(svg);
}

const PARTS = [
  ["base", "base weights (frozen)"],
  ["adapter", "LoRA adapter"],
  ["gradients", "adapter gradients"],
  ["optimizer", "AdamW moments"],
  ["activations", "activations"],
  ["inference", "KV cache and inference buffers"],
];

/** One stacked bar of the memory estimate, against the budget. */
export function memoryBar(container, est) {
  const W = 640, H = 92, L = 4, R = 4;
  // the budget line is drawn only when it is near enough for the parts to stay visible
  const showBudget = est.budget <= 4 * est.total;
  const scale = showBudget ? Math.max(est.total, est.budget) : est.total * 1.05;
  const x = (b) => L + (b / scale) * (W - L - R);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "memory estimate" });
  let at = 0;
  PARTS.forEach(([key, label], i) => {
    const w = x(at + est[key]) - x(at);
    const r = el("rect", { x: x(at), y: 8, width: Math.max(w, 0.5), height: 26, class: `mem ${key}` });
    r.append(el("title", {}, `${label}: ${mib(est[key])}`));
    svg.append(r);
    at += est[key];
    svg.append(el("rect", { x: L + (i % 3) * 210, y: 48 + Math.floor(i / 3) * 20, width: 12, height: 12, class: `mem ${key}` }));
    svg.append(el("text", { x: L + (i % 3) * 210 + 16, y: 58 + Math.floor(i / 3) * 20, class: "axis" }, `${label} ${mib(est[key])}`));
  });
  if (showBudget) {
    svg.append(el("line", { x1: x(est.budget), x2: x(est.budget), y1: 2, y2: 40, class: "budget" }));
    svg.append(el("text", { x: Math.min(x(est.budget), W - 90), y: 45, class: "axis" }, `budget ${mib(est.budget)}`));
  } else {
    svg.append(el("text", { x: W - R, y: 45, "text-anchor": "end", class: "axis" }, `total ${mib(est.total)}, far below the ${mib(est.budget)} budget`));
  }
  container.replaceChildren(svg);
}

/** For each target module, W beside A and B drawn to the same scale, with parameter counts. */
export function loraShapes(container, est) {
  const maxDim = Math.max(...est.targets.flatMap((t) => [t.d_in, t.d_out]));
  const S = 150 / maxDim; // pixels per row/column
  const wrap = document.createElement("div");
  wrap.className = "shapes";
  for (const t of est.targets) {
    const fig = document.createElement("figure");
    const w = t.d_in * S, h = t.d_out * S, r = Math.max(t.r * S, 2);
    // W with B (d_out × r) beside it and A (r × d_in) under it: the update is B·A
    const Wd = w + r + 40, Hd = h + r + 34;
    const svg = el("svg", {
      viewBox: `0 0 ${Wd} ${Hd}`, width: Wd, height: Hd, role: "img",
      "aria-label": `${t.name}, drawn to scale: the frozen W, ${t.d_out} by ${t.d_in}; the trained B, ${t.d_out} by ${t.r}, and A, ${t.r} by ${t.d_in}`,
    });
    svg.append(el("rect", { x: 0, y: 12, width: w, height: h, class: "frozen" }));
    svg.append(el("text", { x: w / 2, y: 10, "text-anchor": "middle", class: "axis" }, "W"));
    svg.append(el("rect", { x: w + 8, y: 12, width: r, height: h, class: "lora-b" }));
    svg.append(el("text", { x: w + 12 + r, y: 12 + h / 2, class: "axis" }, "B"));
    svg.append(el("rect", { x: 0, y: 20 + h, width: w, height: r, class: "lora-a" }));
    svg.append(el("text", { x: w / 2, y: 32 + h + r, "text-anchor": "middle", class: "axis" }, "A"));
    fig.append(svg);
    const cap = document.createElement("figcaption");
    const share = ((100 * t.lora) / t.base).toFixed(2);
    cap.innerHTML = `<b>${t.name}</b> W ${t.d_out}×${t.d_in} (${t.base.toLocaleString()})<br>A ${t.r}×${t.d_in} + B ${t.d_out}×${t.r} = ${t.lora.toLocaleString()} trainable (${share}%)`;
    fig.append(cap);
    wrap.append(fig);
  }
  const total = document.createElement("p");
  total.className = "small";
  total.textContent = `${est.layers} layers × these = ${est.trainable.toLocaleString()} trainable parameters of ${est.params.toLocaleString()} (${((100 * est.trainable) / est.params).toFixed(3)}%).`;
  container.replaceChildren(wrap, total);
}

/**
 * One example's tokens, each shaded by how its loss changed with training (green: the model
 * now predicts it better; red: worse), with the numbers on hover and ↓/↑ after the tokens that
 * changed by more than half a nat; `summary` gets the same in words.
 */
export function tokenLosses(container, summary, d) {
  const spans = d.tokens.map((t) => {
    const s = document.createElement("span");
    s.className = `tok${t.loss ? " loss" : ""}`;
    s.textContent = t.text;
    if (t.before === null) return s;
    const delta = t.after === null ? 0 : t.after - t.before;
    if (t.loss && t.after !== null) {
      const a = Math.min(1, Math.abs(delta) / 2).toFixed(2);
      s.style.backgroundColor = delta < 0 ? `rgba(22, 163, 74, ${a})` : `rgba(220, 38, 38, ${a})`;
      if (Math.abs(delta) > 0.5) s.dataset.change = delta < 0 ? "down" : "up";
    }
    s.title = t.after === null ? `loss ${t.before.toFixed(3)} nats` : `loss ${t.before.toFixed(3)} → ${t.after.toFixed(3)} nats`;
    s.dataset.before = t.before;
    if (t.after !== null) s.dataset.after = t.after;
    return s;
  });
  container.replaceChildren(...spans);
  const counted = d.tokens.filter((t) => t.loss && t.before !== null);
  const mean = (key) => counted.reduce((n, t) => n + t[key], 0) / Math.max(counted.length, 1);
  if (!counted.length) return (summary.textContent = "This example has no tokens with loss.");
  if (counted[0].after === null) {
    summary.textContent = `The ${d.split} example's ${counted.length} answer tokens cost the base model ${mean("before").toFixed(3)} nats each on average. Train, and this shows what changed.`;
    return;
  }
  const most = [...counted].sort((a, b) => a.after - a.before - (b.after - b.before)).slice(0, 5);
  summary.textContent =
    `On the ${d.split} example the ${counted.length} answer tokens cost ${mean("before").toFixed(3)} nats each before training and ${mean("after").toFixed(3)} after. ` +
    `Learned most: ${most.map((t) => `"${t.text.trim() || t.text}" ${t.before.toFixed(2)} → ${t.after.toFixed(2)}`).join(", ")}.`;
}

/**
 * The adapter's update per layer (rows) and module (columns): ‖scale·B·A‖, the darker the
 * larger, with the values on hover, in the picture's label, and in a table below it.
 */
export function layerMap(container, d, step) {
  const modules = [...new Set(d.norms.map((n) => n.module))];
  const max = Math.max(...d.norms.map((n) => n.norm), 1e-12);
  const cw = 64, ch = Math.max(8, Math.min(18, 360 / d.layers)), L = 58, T = 18;
  const W = L + modules.length * cw + 4, H = T + d.layers * ch + 4;
  const top = [...d.norms].sort((a, b) => b.norm - a.norm).slice(0, 3);
  const svg = el("svg", {
    viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": `How much the adapter changes each layer at step ${step}: largest ${top.map((n) => `layer ${n.layer} ${n.module} ${n.norm.toPrecision(3)}`).join(", ")}`,
  });
  modules.forEach((m, j) => svg.append(el("text", { x: L + j * cw + cw / 2, y: 12, "text-anchor": "middle", class: "axis" }, m.replace("_proj", ""))));
  for (let l = 0; l < d.layers; l += Math.ceil(d.layers / 12)) svg.append(el("text", { x: L - 6, y: T + l * ch + ch * 0.75, "text-anchor": "end", class: "axis" }, `layer ${l}`));
  for (const n of d.norms) {
    const r = el("rect", { x: L + modules.indexOf(n.module) * cw, y: T + n.layer * ch, width: cw - 2, height: ch - 1, class: "cell", "fill-opacity": (0.05 + 0.95 * n.norm / max).toFixed(3), "data-norm": n.norm });
    r.append(el("title", {}, `layer ${n.layer} ${n.module}: ‖ΔW‖ = ${n.norm.toPrecision(4)}`));
    svg.append(r);
  }
  const table = document.createElement("table");
  const head = document.createElement("tr");
  head.append(...["layer", ...modules].map((k) => Object.assign(document.createElement("th"), { textContent: k, scope: "col" })));
  const rows = [];
  for (let l = 0; l < d.layers; l++) {
    const tr = document.createElement("tr");
    tr.append(Object.assign(document.createElement("th"), { textContent: l, scope: "row" }));
    for (const m of modules) tr.append(Object.assign(document.createElement("td"), { textContent: d.norms.find((n) => n.layer === l && n.module === m)?.norm.toPrecision(3) ?? "" }));
    rows.push(tr);
  }
  table.append(head, ...rows);
  const details = document.createElement("details");
  details.append(Object.assign(document.createElement("summary"), { textContent: "The same as a table" }), table);
  container.replaceChildren(svg, details);
}

/** The run's memory as the GPU allocator counted it, next to the estimate. */
export function measuredMemory(container, m, est) {
  const rows = [
    ["the model (weights, KV cache, inference buffers)", est ? est.base + est.inference : null, m.model],
    ["the run's buffers (adapter, gradients, AdamW moments, work buffers)", est ? est.adapter + est.gradients + est.optimizer + est.activations : null, m.run],
    ["peak while stepping (all of it)", est ? est.total : null, m.peak],
  ];
  const table = document.createElement("table");
  const head = document.createElement("tr");
  head.append(...["part", "estimated", "measured"].map((k) => Object.assign(document.createElement("th"), { textContent: k, scope: "col" })));
  table.append(head, ...rows.map(([label, e, v]) => {
    const tr = document.createElement("tr");
    tr.append(Object.assign(document.createElement("th"), { textContent: label, scope: "row" }), Object.assign(document.createElement("td"), { textContent: e === null ? "" : mib(e) }), Object.assign(document.createElement("td"), { textContent: mib(v) }));
    return tr;
  }));
  container.replaceChildren(table);
}
