"use strict";
// daam_fast monitor page: probe image x logged step x block, scalar curves, alerts.
(function () {
  const D = JSON.parse(document.getElementById("monitor-data").textContent);
  const T = D.steps.length, N = D.N, L = D.L, gh = D.grid[0], gw = D.grid[1], HW = gh * gw;
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";

  // ---- maps: little-endian float16 (T, N, L, h, w) ----
  const F16 = new Float32Array(65536);
  for (let i = 0; i < 65536; i++) {
    const s = i >> 15 ? -1 : 1, e = (i >> 10) & 31, m = i & 1023;
    F16[i] = e === 0 ? s * m * Math.pow(2, -24) : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * Math.pow(2, e - 15);
  }
  const bin = atob(D.maps), maps = new Float32Array(bin.length >> 1);
  for (let i = 0; i < maps.length; i++) maps[i] = F16[bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8)];
  const frameAt = (t, i, b) => maps.subarray(((t * N + i) * L + b) * HW, ((t * N + i) * L + b + 1) * HW);

  function jet(z) {                      // z in [0, 1] -> [r, g, b] 0..255 (the authors' jet)
    const c = (x) => Math.round(255 * Math.min(1, Math.max(0, 1.5 - Math.abs(4 * z - x))));
    return [c(3), c(2), c(1)];
  }

  const state = { image: 0, t: T - 1, block: L - 1, alpha: 0.5 };
  const pics = [];
  if (D.pictures) D.pictures.forEach((url, i) => { const im = new Image(); im.onload = draw; im.src = url; pics[i] = im; });
  const heat = document.createElement("canvas"); heat.width = gw; heat.height = gh;

  function draw() {
    const cv = $("frame"), ctx = cv.getContext("2d");
    ctx.clearRect(0, 0, cv.width, cv.height);
    const im = pics[state.image];
    if (im && im.complete && im.naturalWidth) { ctx.imageSmoothingEnabled = false; ctx.drawImage(im, 0, 0, cv.width, cv.height); }
    const f = frameAt(state.t, state.image, state.block);
    let lo = Infinity, hi = -Infinity;
    for (const v of f) { if (v < lo) lo = v; if (v > hi) hi = v; }
    const hctx = heat.getContext("2d"), img = hctx.createImageData(gw, gh);
    for (let p = 0; p < HW; p++) {
      const [r, g, b] = jet(hi > lo ? (f[p] - lo) / (hi - lo) : 0);
      img.data.set([r, g, b, 255], 4 * p);
    }
    hctx.putImageData(img, 0, 0);
    ctx.globalAlpha = im ? state.alpha : 1;
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(heat, 0, 0, cv.width, cv.height);
    ctx.globalAlpha = 1;
    readout();
  }

  const value = (k, t, i) => (D.scalars[k] && D.scalars[k][t] ? D.scalars[k][t][i] : null);
  const fmt = (v) => (v === null || v === undefined ? "-" : Number(v).toFixed(3));
  const cls = (c) => (c === null || c === undefined ? "-" : D.classes && D.classes[c] !== undefined ? D.classes[c] : "class " + c);

  function readout() {
    const t = state.t, i = state.image, lines = [];
    lines.push(`step ${D.steps[t]}, D_${state.block + 1} of ${L}, ${D.method}`);
    lines.push(`predicted ${cls(value("pred", t, i))} (p ${fmt(value("prob", t, i))}), explained ${cls(value("target", t, i))}`);
    const rest = Object.keys(D.scalars).filter((k) => !["pred", "target", "prob", "correct"].includes(k));
    lines.push(rest.map((k) => `${k} ${fmt(value(k, t, i))}`).join(", "));
    $("readout").textContent = lines.join("\n");
    $("steplabel").textContent = String(D.steps[t]);
    $("blocklabel").textContent = `D_${state.block + 1}`;
  }

  // ---- curves ----
  const CHARTS = Object.keys(D.scalars).filter((k) => !["pred", "target"].includes(k));
  const who = (a) => (a.image === null ? "the probes' mean" : `image ${a.image} (${D.names[a.image]})`);
  const quantityOf = (k) => (k === "mask_energy" ? "outside" : k);
  function curve(k) {
    const box = document.createElement("div"); box.className = "chart";
    const name = document.createElement("div"); name.className = "name";
    name.textContent = k === "mask_energy" ? "mask_energy (1 - mass outside the mask)" : k;
    box.appendChild(name);
    const svg = document.createElementNS(SVG, "svg"); svg.setAttribute("viewBox", "0 0 300 120"); svg.setAttribute("preserveAspectRatio", "none");
    box.appendChild(svg);
    return { k, box, svg };
  }
  const charts = CHARTS.map(curve);
  charts.forEach((c) => $("curves").appendChild(c.box));

  function el(svg, tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const a in attrs) e.setAttribute(a, attrs[a]);
    svg.appendChild(e);
    return e;
  }
  function drawCharts() {
    const s0 = D.steps[0], s1 = Math.max(D.steps[T - 1], s0 + 1);
    const X = (s) => 24 + (270 * (s - s0)) / (s1 - s0);
    for (const c of charts) {
      while (c.svg.firstChild) c.svg.removeChild(c.svg.firstChild);
      const all = D.scalars[c.k].flat().filter((v) => v !== null);
      let lo = Math.min(0, ...all), hi = Math.max(1, ...all);
      const Y = (v) => 110 - (100 * (v - lo)) / (hi - lo || 1);
      el(c.svg, "line", { x1: 24, x2: 294, y1: Y(lo), y2: Y(lo), stroke: "#ccc" });
      el(c.svg, "text", { x: 2, y: Y(hi) + 4, "font-size": 9, fill: "#888" }).textContent = hi.toFixed(2);
      el(c.svg, "text", { x: 2, y: Y(lo), "font-size": 9, fill: "#888" }).textContent = lo.toFixed(2);
      const line = (vals, colour, width) => {
        let d = "";
        vals.forEach((v, t) => { if (v !== null) d += (d && vals[t - 1] !== null ? "L" : "M") + X(D.steps[t]).toFixed(1) + "," + Y(v).toFixed(1); });
        if (d) el(c.svg, "path", { d, fill: "none", stroke: colour, "stroke-width": width });
      };
      const mean = D.scalars[c.k].map((row) => { const g = row.filter((v) => v !== null); return g.length ? g.reduce((a, b) => a + b, 0) / g.length : null; });
      line(mean, "#999", 1.2);
      line(D.scalars[c.k].map((row) => row[state.image]), "#2f6fdb", 1.6);
      el(c.svg, "line", { x1: X(D.steps[state.t]), x2: X(D.steps[state.t]), y1: 5, y2: 112, stroke: "#1d2430", "stroke-dasharray": "2,2" });
      for (const a of D.alerts) {
        if (quantityOf(c.k) !== a.quantity) continue;
        const t = D.steps.indexOf(a.step);
        const v = t < 0 ? null : a.image === null ? mean[t] : value(c.k, t, a.image);
        if (v === null || v === undefined) continue;
        const strong = a.image === null || a.image === state.image;
        const dot = el(c.svg, "circle", { cx: X(a.step), cy: Y(v), r: strong ? 4 : 2, fill: strong ? "#d0312d" : "none", stroke: "#d0312d" });
        el(dot, "title", {}).textContent = who(a) + ": " + a.reason;
      }
    }
  }

  // ---- image list and alerts ----
  const buttons = D.names.map((n, i) => {
    const b = document.createElement("button");
    b.textContent = n;
    const k = D.alerts.filter((a) => a.image === i).length;
    if (k) { const s = document.createElement("span"); s.className = "badge"; s.textContent = String(k); b.appendChild(s); }
    b.addEventListener("click", () => select(i));
    $("list").appendChild(b);
    return b;
  });
  D.alerts.forEach((a) => {
    const li = document.createElement("li");
    li.textContent = `step ${a.step}, ${who(a)}: ${a.reason}`;
    li.addEventListener("click", () => {
      state.t = Math.max(0, D.steps.indexOf(a.step)); $("step").value = state.t;
      select(a.image === null ? state.image : a.image);
    });
    $("alertlist").appendChild(li);
  });
  if (!D.alerts.length) { const li = document.createElement("li"); li.textContent = "none"; li.style.color = "#5b6573"; $("alertlist").appendChild(li); }
  $("summary").textContent = `${N} probe images, ${T} logged steps (${D.steps[0]} ... ${D.steps[T - 1]}), ${L} blocks, ${D.alerts.length} alerts`;

  function select(i) {
    state.image = Math.max(0, Math.min(N - 1, i));
    buttons.forEach((b, j) => b.classList.toggle("on", j === state.image));
    draw(); drawCharts();
  }
  $("step").max = T - 1; $("step").value = state.t;
  $("block").max = L - 1; $("block").value = state.block;
  $("step").addEventListener("input", (e) => { state.t = +e.target.value; draw(); drawCharts(); });
  $("block").addEventListener("input", (e) => { state.block = +e.target.value; draw(); });
  $("opacity").addEventListener("input", (e) => { state.alpha = +e.target.value; draw(); });
  document.addEventListener("keydown", (e) => {
    if (e.key === "ArrowLeft" || e.key === "ArrowRight") {
      state.t = Math.max(0, Math.min(T - 1, state.t + (e.key === "ArrowRight" ? 1 : -1)));
      $("step").value = state.t; draw(); drawCharts(); e.preventDefault();
    } else if (e.key === "ArrowUp" || e.key === "ArrowDown") {
      select(state.image + (e.key === "ArrowDown" ? 1 : -1)); e.preventDefault();
    }
  });
  select(0);
})();
