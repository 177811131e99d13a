// @@MODEL_FILE@@ in the browser: onnxruntime-web (WebAssembly), preprocessing per
// preprocessing.json (see preprocess.js for which resize this uses and why).
(function () {
  "use strict";
  const SERVE_HINT = ["Opened from disk (file://), the page cannot fetch its model: serve the folder instead, e.g. ",
    ["code", "python3 -m http.server 8000"], " in web/, then open ", ["code", "http://localhost:8000/"], "."];

  // Messages are lists of lines; a line is a list of text and ["code", text] parts (DOM
  // nodes, never HTML strings).
  function showProblem(lines) {
    const status = document.getElementById("status");
    status.textContent = "";
    status.className = "problem";
    for (const line of lines) {
      const p = document.createElement("p");
      for (const part of line) {
        if (Array.isArray(part)) {
          const code = document.createElement(part[0]);
          code.textContent = part[1];
          p.appendChild(code);
        } else {
          p.appendChild(document.createTextNode(part));
        }
      }
      status.appendChild(p);
    }
  }

  const MODEL_URL = "@@MODEL_FILE@@";
  const RUNTIME_SCRIPT = "@@ORT_SCRIPT@@";
  const P = window.EvitPreprocess;
  const FROM_DISK = window.location.protocol === "file:";

  // Without its runtime the page would only log "ort is not defined": say what is
  // missing and how to get it, on the page, where a person looks.
  if (typeof ort === "undefined") {
    const missing = new Error(`onnxruntime-web is missing: ${RUNTIME_SCRIPT} did not load.`);
    const fix = RUNTIME_SCRIPT.startsWith("node_modules/")
      ? ["Fix: run ", ["code", "npm install"], " in this folder (the package's web/), then reload; or re-create " +
          "the package with ", ["code", "evit-export package ... --vendor-runtime"], " to ship the runtime inside it."]
      : ["The package's copy of the runtime is gone: re-create the package with ",
          ["code", "evit-export package ... --vendor-runtime"], " (", ["code", "evit-export verify-package"],
          " shows what changed), or run ", ["code", "npm install"], " and point the page at node_modules/."];
    showProblem([["onnxruntime-web is missing: ", ["code", RUNTIME_SCRIPT], " did not load."], fix]
      .concat(FROM_DISK ? [SERVE_HINT] : []));
    window.evitClassify = async () => { throw missing; };
    window.evitInputTensor = window.evitClassify;
    return;
  }

  // One thread: runs from any static server (threads need cross-origin isolation).
  ort.env.wasm.numThreads = 1;
  // An absolute URL: the runtime imports its loader module from here.
  ort.env.wasm.wasmPaths = new URL("@@WASM_PATHS@@", document.baseURI).href;

  let ready = null;

  async function load() {
    const [pre, labelsText, session] = await Promise.all([
      fetch("preprocessing.json").then((r) => r.json()),
      fetch("labels.txt").then((r) => r.text()),
      ort.InferenceSession.create(MODEL_URL, { executionProviders: ["wasm"] }),
    ]);
    const labels = labelsText.split("\n").filter((line) => line.length > 0);
    // One warm-up run, so the latency shown is the steady state, not the first call's set-up.
    const s = pre.img_size;
    const dims = pre.model_input.layout === "NCHW" ? [1, 3, s, s] : [1, s, s, 3];
    await session.run({ [session.inputNames[0]]: new ort.Tensor("float32", new Float32Array(3 * s * s), dims) });
    return { pre, labels, session };
  }

  function model() {
    if (ready === null) ready = load();
    return ready;
  }

  // Decode at the image's natural size (no canvas scaling) and drop alpha, like
  // Pillow's convert("RGB"). colorSpaceConversion "none" keeps the file's values.
  async function decode(source) {
    const blob = source instanceof Blob ? source : await (await fetch(source)).blob();
    const bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
    const canvas = document.createElement("canvas");
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(bitmap, 0, 0);
    const rgba = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
    const rgb = new Uint8Array(bitmap.width * bitmap.height * 3);
    for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
      rgb[j] = rgba[i];
      rgb[j + 1] = rgba[i + 1];
      rgb[j + 2] = rgba[i + 2];
    }
    return { rgb, width: bitmap.width, height: bitmap.height };
  }

  async function inputTensor(source) {
    const { pre } = await model();
    const img = await decode(source);
    const pixels = P.preprocessPixels(img.rgb, img.width, img.height, pre.img_size, pre.crop_pct,
      pre.resize.interpolation);
    return P.modelInput(pixels, pre);
  }

  async function classify(source, k) {
    const { pre, labels, session } = await model();
    const data = await inputTensor(source);
    const s = pre.img_size;
    const dims = pre.model_input.layout === "NCHW" ? [1, 3, s, s] : [1, s, s, 3];
    const type = { float32: "float32", uint8: "uint8", int8: "int8" }[pre.model_input.dtype];
    const feeds = { [session.inputNames[0]]: new ort.Tensor(type, data, dims) };
    const start = performance.now();
    const results = await session.run(feeds);
    const ms = performance.now() - start;
    const scores = Array.from(results[session.outputNames[0]].data, Number);
    return { top: P.topK(P.softmax(scores), labels, k), ms };
  }

  // For automation: top-5 [{label, score}] with softmax probabilities.
  window.evitClassify = async (imageUrl) => (await classify(imageUrl, 5)).top;
  // The exact input tensor the model gets, for tests comparing with Python.
  window.evitInputTensor = async (imageUrl) => Array.from(await inputTensor(imageUrl));

  function show(file, result, previewUrl) {
    document.getElementById("preview").src = previewUrl;
    document.getElementById("latency").textContent =
      `${file}: inference ${result.ms.toFixed(1)} ms (onnxruntime-web, WebAssembly, 1 thread)`;
    const rows = result.top.map((hit) =>
      `<tr><td>${escapeHtml(hit.label)}</td><td>${(100 * hit.score).toFixed(2)}%</td>` +
      `<td><div class="bar" style="width:${Math.round(200 * hit.score)}px"></div></td></tr>`);
    document.getElementById("results").innerHTML = rows.join("");
  }

  function escapeHtml(text) {
    const div = document.createElement("div");
    div.textContent = text;
    return div.innerHTML;
  }

  async function handle(source, name) {
    const status = document.getElementById("status");
    try {
      status.textContent = "classifying…";
      const previewUrl = source instanceof Blob ? URL.createObjectURL(source) : source;
      show(name, await classify(source, 5), previewUrl);
      status.textContent = "";
    } catch (err) {
      // Opened from disk, the browser refuses to fetch the model: say how to serve it.
      showProblem([[`could not classify ${name}: ${err.message}`]].concat(FROM_DISK ? [SERVE_HINT] : []));
    }
  }

  window.addEventListener("DOMContentLoaded", () => {
    const drop = document.getElementById("drop");
    document.getElementById("file").addEventListener("change", (e) => {
      if (e.target.files.length) handle(e.target.files[0], e.target.files[0].name);
    });
    drop.addEventListener("dragover", (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      if (e.dataTransfer.files.length) handle(e.dataTransfer.files[0], e.dataTransfer.files[0].name);
    });
    handle("sample.png", "sample.png");
  });
})();
