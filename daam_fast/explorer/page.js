// daam_fast explorer: the page (state, controls, drawing); the pixels come from DAAMRender.
(function () {
  const D = JSON.parse(document.getElementById("daam-data").textContent);
  const $ = (id) => document.getElementById(id);
  const f32 = Math.fround;
  const { decode, rne, normalise, heatOf, paint, region } = DAAMRender;
  const TABLES = DAAMRender.tables(D.tables);

  function method(k) {
    const M = D.methods[k];
    if (!M.maps_a) {
      const hw = M.grid[0] * M.grid[1];
      M.maps_a = decode(M.maps, M.maps_scale, M.L * hw);
      M.block_a = decode(M.block, M.block_scale, M.L * hw);
      M.heads_a = M.H ? decode(M.heads, M.heads_scale, M.L * M.H * hw) : null;
    }
    return M;
  }

  // ---- state ----
  const S = {
    img: 0, cls: 0, method: 0, block: 0, view: "acc", heads: null, norm: D.mode, cmap: D.cmap,
    alpha: D.alpha, beta: D.beta, thrOn: false, thr: 0.5,
  };
  const pictures = [];         // per image: the decoded <img>, or none (maps alone)
  const pixelCache = new Map(); // image index -> Uint8ClampedArray RGBA; a few kept (many images)
  const TH = 88;               // thumbnail side in canvas pixels
  let last = null;             // what was drawn last: {series, z, heat, W, H, ...}

  function row() { return S.img * D.topk + S.cls; }
  function headsAll(M) { return !M.H || S.heads.every(Boolean); }

  // The series the normalisation sees: (L, h*w) float32 values.
  function series() {
    const M = method(S.method), L = M.L, hw = M.grid[0] * M.grid[1], r = row();
    if (headsAll(M)) {
      const src = S.view === "acc" ? M.maps_a : M.block_a;
      return src.subarray(r * L * hw, (r + 1) * L * hw);
    }
    const H = M.H, out = new Float32Array(L * hw), sel = [];
    S.heads.forEach((on, h) => { if (on) sel.push(h); });
    for (let b = 0; b < L; b++) {
      for (let p = 0; p < hw; p++) {
        let acc = 0;
        for (const h of sel) acc = f32(acc + M.heads_a[((r * L + b) * H + h) * hw + p]);
        out[b * hw + p] = acc > 0 ? acc : 0;                       // ReLU of the sum of the selected heads
      }
    }
    if (S.view === "acc") for (let b = 1; b < L; b++) for (let p = 0; p < hw; p++) out[b * hw + p] = f32(out[(b - 1) * hw + p] + out[b * hw + p]);
    return out;
  }

  // ---- drawing ----
  const frame = $("frame"), marks = $("marks");
  const RW = { willReadFrequently: true };   // the tests (and api.frame) read the pixels back
  const ctx2d = (c) => c.getContext("2d", RW);
  function draw() {
    const M = method(S.method), [h, w] = M.grid, L = M.L, hw = h * w;
    const [W, H] = D.sizes[S.img];
    const Dv = series(), z = normalise(Dv, L, hw, S.norm);
    const heat = heatOf(z, S.block, h, w, W, H);
    const pix = pixelsOf(S.img);
    for (const c of [frame, marks]) if (c.width !== W || c.height !== H) { c.width = W; c.height = H; }
    ctx2d(frame).putImageData(paint(heat, W, H, pix, TABLES[S.cmap], S.alpha, S.beta), 0, 0);
    last = { Dv, z, heat, W, H, h, w, hw, L, reg: null };
    drawMarks();
    drawStrip(z, M);
    labels(M);
  }

  function drawMarks() {
    const { heat, W, H } = last, ctx = ctx2d(marks);
    ctx.clearRect(0, 0, W, H);
    last.reg = null;
    if (!S.thrOn) { $("boxtext").textContent = ""; return; }
    const reg = region(heat, W, H, S.thr);
    last.reg = reg;
    const img = ctx.createImageData(W, H), o = img.data, ins = reg.inside;
    for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
      const i = y * W + x;
      if (!ins[i]) continue;
      const edge = x === 0 || y === 0 || x === W - 1 || y === H - 1 || !ins[i - 1] || !ins[i + 1] || !ins[i - W] || !ins[i + W];
      if (edge) { o[4 * i] = 255; o[4 * i + 1] = 255; o[4 * i + 2] = 255; o[4 * i + 3] = 255; }
    }
    ctx.putImageData(img, 0, 0);
    if (reg.box) {
      const [x0, y0, x1, y1] = reg.box;
      ctx.strokeStyle = "#ff2fd0"; ctx.lineWidth = Math.max(1, W / 224);
      ctx.strokeRect(x0 + 0.5, y0 + 0.5, x1 - x0 - 1, y1 - y0 - 1);
      $("boxtext").textContent = `region: heat >= ${(255 * S.thr).toFixed(1)} (z >= ${S.thr.toFixed(2)}), ${(100 * reg.n / (W * H)).toFixed(1)}% of the picture; box (x0, y0, x1, y1) = (${x0}, ${y0}, ${x1}, ${y1}) px, x1 and y1 exclusive`;
    } else {
      $("boxtext").textContent = `region: empty at z >= ${S.thr.toFixed(2)}`;
    }
  }

  function drawStrip(z, M) {
    const strip = $("strip"), [h, w] = M.grid, hw = h * w, T = TABLES[S.cmap];
    if (strip.childElementCount !== M.L) {
      strip.innerHTML = "";
      for (let b = 0; b < M.L; b++) {
        const f = document.createElement("figure"), c = document.createElement("canvas"), cap = document.createElement("figcaption");
        c.width = w; c.height = h; cap.textContent = String(b + 1);
        f.appendChild(c); f.appendChild(cap); f.title = `block ${b + 1}`;
        f.addEventListener("click", () => set({ block: b }));
        strip.appendChild(f);
      }
    }
    [...strip.children].forEach((f, b) => {
      const c = f.firstChild;
      if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
      const im = new ImageData(w, h);
      for (let p = 0; p < hw; p++) {
        const k = 3 * Math.floor(f32(z[b * hw + p] * 255));
        im.data[4 * p] = rne(T[k]); im.data[4 * p + 1] = rne(T[k + 1]); im.data[4 * p + 2] = rne(T[k + 2]); im.data[4 * p + 3] = 255;
      }
      c.getContext("2d").putImageData(im, 0, 0);
      f.classList.toggle("on", b === S.block);
    });
  }

  const NORM_TEXT = {
    nonlinear: "nonlinear (the authors' default): z = per-frame min-max of sigmoid(5 D_b / max D_L) - 0.5",
    linear: "linear (legacy, keeps relative brightness across blocks): z = max(0, (D_b - min D_L) / (max D_b - min D_L)) * (max D_b - min D_b) / (max D_L - min D_L)",
    raw: "raw: z = per-frame min-max of D_b",
  };

  function labels(M) {
    const L = M.L;
    $("blocklabel").textContent = `${S.block + 1} / ${L}` + (S.view === "acc" ? ` (D_${S.block + 1}, accumulated over blocks 1..${S.block + 1})` : ` (L_${S.block + 1}, block ${S.block + 1} alone)`);
    const series = S.view === "acc" ? "D_b" : "L_b (the per-block series normalised as render(res.block_maps) does: max L_L in place of max D_L)";
    $("normtext").textContent = `Colour bar: z on a fixed 0-1 scale. Normalisation ${NORM_TEXT[S.norm]}; series ${series}.`;
    const headsText = !M.H ? "" : headsAll(M) ? " All heads: the result's own maps." :
      ` Selected heads: L_b = ReLU(sum of the selected heads' terms)${S.view === "acc" ? ", D_b = L_1 + ... + L_b" : ""}.`;
    $("howto").textContent = `As daam_fast.render.render(maps, images, mode="${S.norm}", alpha=${S.alpha}) in Python: ` +
      `${NORM_TEXT[S.norm]}; then heat = floor(255 z) at the ${M.grid[0]} x ${M.grid[1]} grid, bilinear resize to the picture ` +
      `(align_corners=False, rounded half to even), colour map ${S.cmap}, overlay = clamp(round(${S.alpha} * colour + ${S.beta} * picture), 0, 255).` +
      headsText + " Maps are carried as float16 scaled per row (relative error <= 2^-11 of the row's largest value).";
    $("opacitylabel").textContent = S.alpha.toFixed(2);
    $("thrlabel").textContent = S.thr.toFixed(2);
    const p = D.methods[S.method].probs;
    const pr = p && p[row()] != null ? `, p = ${p[row()].toFixed(3)}` : "";
    $("summary").textContent = `${D.names[S.img]} - ${D.class_labels[S.img][S.cls]}${pr} - ${M.label} - ${D.n_images} images, ${L} blocks` + (M.H ? `, ${M.H} heads` : "");
    [...$("list").children].forEach((b, i) => b.classList.toggle("on", i === S.img));
    [...$("classes").children].forEach((b, j) => b.classList.toggle("on", j === S.cls));
  }

  // ---- controls ----
  function buildHeads() {
    const M = method(S.method), box = $("heads");
    box.innerHTML = "";
    S.heads = new Array(M.H).fill(true);
    $("headrow").querySelectorAll("button").forEach((b) => { b.disabled = !M.H; });
    $("headnote").textContent = M.H ? "" : "No per-head maps in this result (DAAM(model, heads=True) records them).";
    for (let h = 0; h < M.H; h++) {
      const lab = document.createElement("label"), cb = document.createElement("input");
      cb.type = "checkbox"; cb.checked = true; cb.id = `head-${h}`; cb.dataset.head = String(h);
      cb.addEventListener("change", () => { S.heads[h] = cb.checked; draw(); });
      lab.appendChild(cb); lab.appendChild(document.createTextNode(` ${h + 1}`));
      box.appendChild(lab);
    }
  }
  function buildClasses() {
    const box = $("classes");
    box.innerHTML = "";
    $("classrow").style.display = D.topk > 1 ? "" : "none";
    const p = D.methods[S.method].probs;
    for (let j = 0; j < D.topk; j++) {
      const b = document.createElement("button"), r = S.img * D.topk + j;
      b.type = "button"; b.id = `class-${j}`;
      b.textContent = `${j + 1}. ${D.class_labels[S.img][j]}` + (p && p[r] != null ? ` ${p[r].toFixed(2)}` : "");
      b.addEventListener("click", () => set({ cls: j }));
      box.appendChild(b);
    }
  }
  function buildList() {
    const list = $("list");
    D.names.forEach((name, i) => {
      const b = document.createElement("button"), c = document.createElement("canvas"), lab = document.createElement("span");
      b.type = "button"; b.id = `image-${i}`; lab.className = "lab";
      const bn = document.createElement("b");
      bn.textContent = name;
      lab.appendChild(bn);
      lab.appendChild(document.createTextNode(D.class_labels[i][0]));
      c.width = TH; c.height = TH;
      b.appendChild(c); b.appendChild(lab);
      b.addEventListener("click", () => set({ img: i }));
      list.appendChild(b);
    });
  }
  function fit(ctx, src, W, H) {   // draw src (W x H) centred into the TH x TH thumbnail
    const r = TH / Math.max(W, H), w = Math.round(W * r), h = Math.round(H * r);
    ctx.drawImage(src, (TH - w) >> 1, (TH - h) >> 1, w, h);
  }
  function thumbs() {
    const M = method(0), [h, w] = M.grid, hw = h * w, tmp = document.createElement("canvas");
    tmp.width = w; tmp.height = h;
    [...$("list").children].forEach((b, i) => {
      const ctx = b.querySelector("canvas").getContext("2d"), [W, H] = D.sizes[i];
      if (pictures[i]) { fit(ctx, pictures[i], W, H); return; }
      const r = i * D.topk, z = normalise(M.maps_a.subarray(r * M.L * hw, (r + 1) * M.L * hw), M.L, hw, D.mode);
      tmp.getContext("2d").putImageData(paint(heatOf(z, M.L - 1, h, w, w, h), w, h, null, TABLES[D.cmap], 1, 0), 0, 0);
      ctx.imageSmoothingEnabled = false;
      fit(ctx, tmp, w, h);
    });
  }

  function set(p) {
    const M0 = D.methods[S.method];
    if ("method" in p && p.method !== S.method) {
      S.method = p.method;
      buildHeads(); buildClasses();
      S.block = Math.min(S.block, D.methods[S.method].L - 1);
    }
    if ("img" in p) { S.img = Math.max(0, Math.min(D.n_images - 1, p.img)); buildClasses(); }
    if ("cls" in p) S.cls = Math.max(0, Math.min(D.topk - 1, p.cls));
    for (const k of ["view", "norm", "cmap", "alpha", "thrOn", "thr"]) if (k in p) S[k] = p[k];
    if ("heads" in p) { S.heads = p.heads.slice(); $("heads").querySelectorAll("input").forEach((cb, h) => { cb.checked = S.heads[h]; }); }
    const M = D.methods[S.method];
    if ("block" in p) S.block = Math.max(0, Math.min(M.L - 1, p.block));
    // mirror the state into the controls
    $("block").max = String(M.L - 1); $("block").value = String(S.block);
    $("view-acc").checked = S.view === "acc"; $("view-block").checked = S.view === "block";
    $("norm").value = S.norm; $("cmap").value = S.cmap; $("opacity").value = String(S.alpha);
    $("thr-on").checked = S.thrOn; $("thr").value = String(S.thr); $("method").value = String(S.method);
    void M0;
    draw();
  }

  function wire() {
    D.methods.forEach((M, k) => {
      const o = document.createElement("option");
      o.value = String(k); o.textContent = M.label;
      $("method").appendChild(o);
    });
    $("methodrow").style.display = D.methods.length > 1 ? "" : "none";
    $("method").addEventListener("change", (e) => set({ method: +e.target.value }));
    $("block").addEventListener("input", (e) => set({ block: +e.target.value }));
    $("view-acc").addEventListener("change", () => set({ view: "acc" }));
    $("view-block").addEventListener("change", () => set({ view: "block" }));
    $("heads-all").addEventListener("click", () => set({ heads: S.heads.map(() => true) }));
    $("heads-none").addEventListener("click", () => set({ heads: S.heads.map(() => false) }));
    $("norm").addEventListener("change", (e) => set({ norm: e.target.value }));
    $("cmap").addEventListener("change", (e) => { set({ cmap: e.target.value }); drawBar(); });
    $("opacity").addEventListener("input", (e) => set({ alpha: +e.target.value }));
    $("thr-on").addEventListener("change", (e) => set({ thrOn: e.target.checked }));
    $("thr").addEventListener("input", (e) => set({ thr: +e.target.value, thrOn: true }));
    $("opacityrow").style.display = D.images ? "" : "none";
    document.addEventListener("keydown", (e) => {
      const t = e.target;
      if (t && (t.tagName === "SELECT" || (t.tagName === "INPUT" && (t.type === "range" || t.type === "radio")))) return;
      const moves = { ArrowLeft: ["block", -1], ArrowRight: ["block", 1], ArrowUp: ["img", -1], ArrowDown: ["img", 1] };
      const m = moves[e.key];
      if (!m) return;
      e.preventDefault();
      set({ [m[0]]: S[m[0]] + m[1] });
    });
    marks.addEventListener("mousemove", (e) => {
      if (!last) return;
      const rect = marks.getBoundingClientRect();
      const x = Math.min(last.W - 1, Math.max(0, Math.floor((e.clientX - rect.left) * last.W / rect.width)));
      const y = Math.min(last.H - 1, Math.max(0, Math.floor((e.clientY - rect.top) * last.H / rect.height)));
      const gy = Math.min(last.h - 1, Math.floor(y * last.h / last.H)), gx = Math.min(last.w - 1, Math.floor(x * last.w / last.W));
      const p = S.block * last.hw + gy * last.w + gx, name = S.view === "acc" ? "D" : "L";
      $("readout").textContent = `pixel (x ${x}, y ${y}) - patch (row ${gy}, col ${gx}): ${name}_${S.block + 1} = ${last.Dv[p].toPrecision(5)}, ` +
        `z = ${last.z[p].toFixed(3)}; heat here = ${last.heat[y * last.W + x]} / 255`;
    });
    marks.addEventListener("mouseleave", () => { $("readout").textContent = "Move the pointer over the picture to read the map."; });
  }

  function drawBar() {
    const c = $("colourbar"), im = new ImageData(256, 14), T = TABLES[S.cmap];
    for (let y = 0; y < 14; y++) for (let k = 0; k < 256; k++) {
      const i = 4 * (y * 256 + k);
      im.data[i] = rne(T[3 * k]); im.data[i + 1] = rne(T[3 * k + 1]); im.data[i + 2] = rne(T[3 * k + 2]); im.data[i + 3] = 255;
    }
    c.getContext("2d").putImageData(im, 0, 0);
  }

  function loadImages() {
    if (!D.images) return Promise.resolve();
    return Promise.all(D.images.map((url, i) => new Promise((resolve, reject) => {
      const im = new Image();
      im.onload = () => { pictures[i] = im; resolve(); };
      im.onerror = () => reject(new Error(`image ${i} could not be decoded`));
      im.src = url;
    })));
  }

  // The picture's RGBA pixels as the browser decoded it (drawn at its own size: no resampling).
  function pixelsOf(i) {
    if (!pictures[i]) return null;
    if (!pixelCache.has(i)) {
      const [W, H] = D.sizes[i], c = document.createElement("canvas");
      c.width = W; c.height = H;
      const ctx = c.getContext("2d", RW);
      ctx.drawImage(pictures[i], 0, 0, W, H);
      if (pixelCache.size >= 8) pixelCache.delete(pixelCache.keys().next().value);
      pixelCache.set(i, ctx.getImageData(0, 0, W, H).data);
    }
    return pixelCache.get(i);
  }

  // For tests and scripts: the state, the last frame and the pictures as the page sees them.
  const api = {
    state: S, set,
    heat: () => Array.from(last.heat),
    size: () => [last.W, last.H],
    frame: () => Array.from(ctx2d(frame).getImageData(0, 0, last.W, last.H).data),
    image: (i) => (pictures[i] ? Array.from(pixelsOf(i)) : null),
    box: () => (last.reg ? last.reg.box : null),
  };
  window.daamExplorer = api;
  buildList(); buildHeads(); buildClasses(); wire();
  api.ready = loadImages().then(() => {
    set({ block: method(0).L - 1 });
    drawBar(); thumbs();
    document.body.dataset.ready = "1";
  });
})();
