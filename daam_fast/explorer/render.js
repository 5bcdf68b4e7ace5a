"use strict";
// daam_fast explorer: the drawing core, step for step as daam_fast.render.render
// (docs/method.md §5): per-frame normalisation, floor(255 z), bilinear resize with torch's
// align_corners=False weights, round half to even, colour map, alpha * colour + beta * image
// rounded and saturated. float32 rounding is emulated with Math.fround at every step.
const DAAMRender = (function () {
  const f32 = Math.fround;

  // ---- decoding: little-endian float16 * per-row scale -> float32 ----
  const F16 = new Float32Array(65536);
  for (let i = 0; i < 65536; i++) {
    const s = i >> 15 ? -1 : 1, e = (i >> 10) & 31, m = i & 1023;
    F16[i] = e === 0 ? s * m * Math.pow(2, -24) : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * Math.pow(2, e - 15);
  }
  function bytes(b64) {
    const bin = atob(b64), u = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) u[i] = bin.charCodeAt(i);
    return u;
  }
  function decode(b64, scales, per) {
    const u = bytes(b64), n = u.length >> 1, out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = F16[u[2 * i] | (u[2 * i + 1] << 8)] * scales[Math.floor(i / per)];
    return out;
  }
  // ---- colour tables ----
  const JET = new Float32Array(256 * 3);   // colormap_jet(k / 255) * 255 in float32
  for (let k = 0; k < 256; k++) {
    const t = f32(k / 255);
    [3, 2, 1].forEach((c, j) => {
      const v = Math.min(1, Math.max(0, f32(1.5 - Math.abs(f32(f32(4 * t) - c)))));
      JET[3 * k + j] = f32(v * 255);
    });
  }
  // {jet, viridis, inferno}: 256 x RGB float tables; viridis and inferno come from the page's
  // data (matplotlib's, uint8), jet is computed as colormap_jet does.
  function tables(packed) {
    const T = { jet: JET };
    for (const name of Object.keys(packed)) T[name] = Float32Array.from(bytes(packed[name]));
    return T;
  }

  function rne(x) {              // torch.round: half to even
    const r = Math.round(x);
    return (r - x === 0.5 && (r & 1)) ? r - 1 : r;
  }

  function minmax(a, off, n) {
    let lo = Infinity, hi = -Infinity;
    for (let i = off; i < off + n; i++) { const v = a[i]; if (v < lo) lo = v; if (v > hi) hi = v; }
    return [lo, hi];
  }
  const EPS = f32(1e-10);

  // normalize_frames of daam_fast.ops.render.reference: (L, hw) -> z in [0, 1]
  function normalise(Dv, L, hw, mode) {
    const z = new Float32Array(L * hw), fin = (L - 1) * hw;
    if (mode === "raw") {
      for (let b = 0; b < L; b++) {
        const [lo, hi] = minmax(Dv, b * hw, hw), den = f32(hi - lo);
        for (let p = b * hw; p < (b + 1) * hw; p++) z[p] = den > 0 ? Math.min(1, Math.max(0, f32(f32(Dv[p] - lo) / den))) : 0;
      }
      return z;
    }
    if (mode === "nonlinear") {
      const G = minmax(Dv, fin, hw)[1];
      if (!(G > 0)) return z;
      const y = new Float32Array(L * hw);
      for (let i = 0; i < L * hw; i++) {
        const x = f32(5 * f32(Dv[i] / G));
        y[i] = f32(f32(1 / f32(1 + f32(Math.exp(-x)))) - 0.5);
      }
      for (let b = 0; b < L; b++) {
        const [lo, hi] = minmax(y, b * hw, hw), den = f32(hi - lo);
        for (let p = b * hw; p < (b + 1) * hw; p++) z[p] = den > 0 ? Math.min(1, Math.max(0, f32(f32(y[p] - lo) / den))) : 0;
      }
      return z;
    }
    const [gmin, gmax] = minmax(Dv, fin, hw), gden = f32(gmax - gmin);
    for (let b = 0; b < L; b++) {
      const [lo, hi] = minmax(Dv, b * hw, hw);
      const den = f32(f32(hi - gmin) + EPS), r = gden > 0 ? f32(f32(hi - lo) / gden) : 0;
      for (let p = b * hw; p < (b + 1) * hw; p++) {
        const v = Math.max(0, f32(f32(Dv[p] - gmin) / den));
        z[p] = Math.min(1, Math.max(0, f32(v * r)));
      }
    }
    return z;
  }

  // torch bilinear (align_corners=False) source indices and weights along one axis.
  function axis(inn, out) {
    const i0 = new Int32Array(out), i1 = new Int32Array(out), w0 = new Float32Array(out), w1 = new Float32Array(out);
    const scale = f32(inn / out);
    for (let d = 0; d < out; d++) {
      let src = f32(f32(scale * f32(d + 0.5)) - 0.5);
      if (src < 0) src = 0;
      const a = Math.min(Math.floor(src), inn - 1);
      const lam = Math.min(1, Math.max(0, f32(src - a)));
      i0[d] = a; i1[d] = a + (a < inn - 1 ? 1 : 0); w1[d] = lam; w0[d] = f32(1 - lam);
    }
    return { i0, i1, w0, w1 };
  }
  const axes = {};
  function axisCached(inn, out) { const k = inn + ":" + out; return axes[k] || (axes[k] = axis(inn, out)); }

  // One frame's heat: floor(255 z) at the grid, bilinear to (H, W), rounded half to even.
  function heatOf(z, b, h, w, W, H) {
    const hw = h * w, z8 = new Float32Array(hw), heat = new Uint8Array(W * H);
    for (let p = 0; p < hw; p++) z8[p] = Math.floor(f32(z[b * hw + p] * 255));
    if (h === H && w === W) { for (let p = 0; p < hw; p++) heat[p] = z8[p]; return heat; }
    const ay = axisCached(h, H), ax = axisCached(w, W);
    for (let y = 0; y < H; y++) {
      const r0 = ay.i0[y] * w, r1 = ay.i1[y] * w, hy0 = ay.w0[y], hy1 = ay.w1[y];
      for (let x = 0; x < W; x++) {
        const c0 = ax.i0[x], c1 = ax.i1[x], wx0 = ax.w0[x], wx1 = ax.w1[x];
        const t0 = f32(f32(z8[r0 + c0] * wx0) + f32(z8[r0 + c1] * wx1));
        const t1 = f32(f32(z8[r1 + c0] * wx0) + f32(z8[r1 + c1] * wx1));
        const v = f32(f32(t0 * hy0) + f32(t1 * hy1));
        heat[y * W + x] = Math.min(255, Math.max(0, rne(v)));
      }
    }
    return heat;
  }

  // colour + overlay: clamp(round(alpha * colour + beta * image)), or the colour alone.
  // T: a colour table of tables(); pix: the picture's RGBA pixels or null (the colour alone).
  function paint(heat, W, H, pix, T, alpha, beta) {
    const out = new ImageData(W, H), o = out.data;
    const a = f32(alpha), be = f32(beta);
    for (let i = 0; i < W * H; i++) {
      const k = 3 * heat[i];
      for (let c = 0; c < 3; c++) {
        const col = T[k + c];
        o[4 * i + c] = pix ? Math.min(255, Math.max(0, rne(f32(f32(a * col) + f32(be * pix[4 * i + c]))))) : rne(col);
      }
      o[4 * i + 3] = 255;
    }
    return out;
  }

  function region(heat, W, H, t) {
    const lvl = 255 * t, inside = new Uint8Array(W * H);
    let x0 = W, y0 = H, x1 = -1, y1 = -1, n = 0;
    for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
      if (heat[y * W + x] >= lvl) {
        inside[y * W + x] = 1; n++;
        if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
      }
    }
    return { inside, n, box: n ? [x0, y0, x1 + 1, y1 + 1] : null };
  }

  return { bytes, decode, tables, rne, normalise, heatOf, paint, region };
})();
