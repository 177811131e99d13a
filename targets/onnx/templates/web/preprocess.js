// Preprocessing exactly as evit-export checked the model, in plain JavaScript.
//
// Which resize this uses: NOT the canvas's. A browser canvas scales with its own
// filter (no antialiasing control, implementation-defined), so it cannot reproduce
// torchvision. The canvas here only decodes the image at its natural size; the resize
// below restates torch's CPU uint8 antialiased resize (filter weights in double, scaled
// to int16, 32-bit integer sums, each pass rounded back to 0..255, horizontal pass
// first), so the pixels are identical to the tool's, not merely close.
(function (root) {
  "use strict";

  function bicubic(x) {
    const a = -0.5; // torch's antialiased bicubic uses Pillow's a = -0.5
    x = Math.abs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
    return 0.0;
  }

  function triangle(x) {
    x = Math.abs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
  }

  const FILTERS = { bicubic: [bicubic, 4], bilinear: [triangle, 2] };

  // Per output index: first source index, int16 weights, and the fixed-point precision.
  function resizeWeights(inSize, outSize, interpolation) {
    const [filter, interpSize] = FILTERS[interpolation];
    const scale = inSize / outSize;
    const support = scale >= 1.0 ? interpSize * 0.5 * scale : interpSize * 0.5;
    const maxTaps = Math.ceil(support) * 2 + 1;
    const invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
    const starts = [];
    const rows = [];
    let wmax = 0.0;
    for (let i = 0; i < outSize; i++) {
      const center = scale * (i + 0.5);
      const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
      const xsize = Math.min(Math.max(Math.min(Math.trunc(center + support + 0.5), inSize) - xmin, 0), maxTaps);
      let w = [];
      let total = 0.0;
      for (let j = 0; j < xsize; j++) {
        const v = filter((j + xmin - center + 0.5) * invscale);
        w.push(v);
        total += v;
      }
      if (total !== 0.0) w = w.map((v) => v / total);
      for (const v of w) wmax = Math.max(wmax, v);
      starts.push(xmin);
      rows.push(w);
    }
    let precision = 0;
    while (precision < 22 && Math.trunc(0.5 + wmax * 2 ** (precision + 1)) < 1 << 15) precision++;
    const weights = rows.map((w) => w.map((v) => Math.trunc(v * 2 ** precision + (v >= 0 ? 0.5 : -0.5))));
    return { starts, weights, precision };
  }

  // One pass of an RGB (3 bytes per pixel) image along x (horizontal) or y.
  function resizeAxis(src, width, height, outSize, horizontal, interpolation) {
    const { starts, weights, precision } = resizeWeights(horizontal ? width : height, outSize, interpolation);
    const outW = horizontal ? outSize : width;
    const outH = horizontal ? height : outSize;
    const out = new Uint8Array(outW * outH * 3);
    const half = 1 << (precision - 1);
    for (let y = 0; y < outH; y++) {
      for (let x = 0; x < outW; x++) {
        const i = horizontal ? x : y;
        const w = weights[i];
        for (let c = 0; c < 3; c++) {
          let acc = half;
          for (let k = 0; k < w.length; k++) {
            const sx = horizontal ? starts[i] + k : x;
            const sy = horizontal ? y : starts[i] + k;
            acc += src[(sy * width + sx) * 3 + c] * w[k];
          }
          const v = acc >> precision; // arithmetic shift, as the C code's
          out[(y * outW + x) * 3 + c] = v < 0 ? 0 : v > 255 ? 255 : v;
        }
      }
    }
    return out;
  }

  // (width, height) after the shorter side goes to shortSide: torchvision's rule.
  function resizedSize(width, height, shortSide) {
    if (width <= height) return [shortSide, Math.trunc((shortSide * height) / width)];
    return [Math.trunc((shortSide * width) / height), shortSide];
  }

  // int(round((size - crop) / 2)) with round-half-to-even; negative = zero padding.
  function cropOffset(size, crop) {
    if (size < crop) return -Math.floor((crop - size) / 2);
    const d = size - crop;
    if (d % 2 === 0) return d / 2;
    const k = (d - 1) / 2;
    return k % 2 === 0 ? k : k + 1;
  }

  // RGB bytes (width x height) -> RGB bytes (imgSize x imgSize): resize + centre crop.
  function preprocessPixels(rgb, width, height, imgSize, cropPct, interpolation) {
    if (!(interpolation in FILTERS)) throw new Error("unsupported interpolation " + interpolation);
    const [newW, newH] = resizedSize(width, height, Math.floor(imgSize / cropPct));
    let img = rgb;
    if (newW !== width) img = resizeAxis(img, width, height, newW, true, interpolation);
    if (newH !== height) img = resizeAxis(img, newW, height, newH, false, interpolation);
    const top = cropOffset(newH, imgSize);
    const left = cropOffset(newW, imgSize);
    const out = new Uint8Array(imgSize * imgSize * 3);
    for (let y = 0; y < imgSize; y++) {
      const sy = y + top;
      if (sy < 0 || sy >= newH) continue;
      for (let x = 0; x < imgSize; x++) {
        const sx = x + left;
        if (sx < 0 || sx >= newW) continue;
        for (let c = 0; c < 3; c++) out[(y * imgSize + x) * 3 + c] = img[(sy * newW + sx) * 3 + c];
      }
    }
    return out;
  }

  // Round half to even, as numpy's rint (Math.round rounds half up).
  function rint(v) {
    const r = Math.round(v);
    return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
  }

  // RGB bytes (S x S) -> the model's input tensor data per preprocessing.json's
  // model_input. Float32Array stores round every step to float32, as numpy does.
  function modelInput(pixels, pre) {
    const s = pre.img_size;
    const mi = pre.model_input;
    const nchw = mi.layout === "NCHW";
    const out = new Float32Array(3 * s * s);
    const f = Math.fround;
    for (let i = 0; i < s * s; i++) {
      for (let c = 0; c < 3; c++) {
        let v = pixels[i * 3 + c];
        if (mi.range === "normalized") v = f(f(f(v / 255) - f(pre.mean[c])) / f(pre.std[c]));
        else if (mi.range === "unit") v = f(v / 255);
        out[nchw ? c * s * s + i : i * 3 + c] = v;
      }
    }
    if (mi.dtype === "uint8" || mi.dtype === "int8") {
      const [scale, zeroPoint] = mi.quantization || [1.0, 0];
      const [lo, hi] = mi.dtype === "uint8" ? [0, 255] : [-128, 127];
      const q = mi.dtype === "uint8" ? new Uint8Array(out.length) : new Int8Array(out.length);
      for (let i = 0; i < out.length; i++) q[i] = Math.min(hi, Math.max(lo, rint(f(out[i] / f(scale))) + zeroPoint));
      return q;
    }
    return out;
  }

  function softmax(values) {
    const max = Math.max(...values);
    const e = values.map((v) => Math.exp(v - max));
    const sum = e.reduce((a, b) => a + b, 0);
    return e.map((v) => v / sum);
  }

  function topK(probs, labels, k) {
    return Array.from(probs.keys())
      .sort((a, b) => probs[b] - probs[a] || a - b)
      .slice(0, k)
      .map((i) => ({ label: labels[i], score: probs[i] }));
  }

  const api = { resizeWeights, resizedSize, cropOffset, preprocessPixels, modelInput, softmax, topK, rint };
  root.EvitPreprocess = api;
  if (typeof module !== "undefined" && module.exports) module.exports = api;
})(typeof self !== "undefined" ? self : globalThis);
