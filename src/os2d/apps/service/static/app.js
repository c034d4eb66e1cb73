/* OS2D web page: upload a photo, define classes by drawing boxes, detect, inspect.
   Plain JS, no dependencies. Talks to the service's /api/v1 endpoints. */
(() => {
  "use strict";

  const API = "/api/v1";
  const TOKEN_KEY = "os2d.token";
  const PALETTE = [
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#0aa5a5", "#d6249f", "#7a9a01",
    "#9a6324", "#800000", "#1f77b4", "#808000", "#000075", "#ff6f61", "#2ca02c", "#bc5090",
  ];

  const $ = (id) => document.getElementById(id);
  const el = {
    status: $("status"), statusText: $("status-text"), token: $("token"),
    error: $("error"), errorText: $("error-text"), errorClose: $("error-close"),
    photoInput: $("photo-input"), dropzone: $("dropzone"), canvas: $("canvas"),
    selectionInfo: $("selection-info"),
    className: $("class-name"), classImageInput: $("class-image-input"),
    addClass: $("add-class"), clearSelection: $("clear-selection"), classWarnings: $("class-warnings"),
    negativeOf: $("negative-of"), addNegative: $("add-negative"),
    showUnknown: $("show-unknown"), unknownCount: $("unknown-count"),
    gallery: $("gallery"), galleryEmpty: $("gallery-empty"),
    selectAll: $("select-all"), selectNone: $("select-none"),
    maxDetections: $("max-detections"), serverThreshold: $("server-threshold"),
    imageSize: $("image-size"), scales: $("scales"),
    detect: $("detect"), spinner: $("spinner"), downloadJson: $("download-json"),
    threshold: $("threshold"), thresholdValue: $("threshold-value"), thresholdKind: $("threshold-kind"),
    detCount: $("det-count"), detTotal: $("det-total"), detTime: $("det-time"),
    results: $("results"),
    report: $("report"), reportRows: $("report-rows"), reportOneLabel: $("report-one-label"),
    reportSummary: $("report-summary"),
    planogram: $("planogram"), planogramResult: $("planogram-result"),
    trainAddDetections: $("train-add-detections"), trainClass: $("train-class"), trainAddBox: $("train-add-box"),
    trainBoxes: $("train-boxes"), trainSave: $("train-save"), trainSummary: $("train-summary"),
    trainPhotos: $("train-photos"), ftSteps: $("ft-steps"), ftStart: $("ft-start"), ftCancel: $("ft-cancel"),
    ftResume: $("ft-resume"), ftProgress: $("ft-progress"), ftStatus: $("ft-status"), ftTable: $("ft-table"),
    ftActivate: $("ft-activate"), ftDeactivate: $("ft-deactivate"), ftModel: $("ft-model"),
  };
  const ctx = el.canvas.getContext("2d");

  const state = {
    photoFile: null,   // File of the current photo (sent as-is to the server)
    photo: null,       // HTMLImageElement
    width: 0, height: 0, // original pixels
    sx: 1, sy: 1,      // canvas pixels per original pixel
    selection: null,   // {x1,y1,x2,y2} in original pixels
    drag: null,        // {x0,y0,pointerId} while drawing
    classes: [],       // from GET /classes
    unchecked: new Set(), // class names the user unticked
    response: null,    // last /detect response
    confidenceThreshold: undefined, // the weights' calibrated threshold (null: none; undefined: not known yet)
    report: null,      // last /report response (of the detections shown)
    reportSeq: 0,      // the latest report request; older answers are dropped
    colors: new Map(), // label -> colour
    drawn: 0,          // detections drawn on the canvas right now
    busy: false,
    ready: false,
    trainBoxes: [],    // [{class, box: [x1,y1,x2,y2]}] of the current photo, not saved yet
    trainPhotos: 0,    // saved training photos with boxes
    job: null,         // the latest fine-tune job (GET /finetune)
    model: null,       // the model in use (GET /finetune "model")
    jobTimer: 0,
  };

  /* ---------- errors, token, fetch ---------- */

  function showError(message) {
    el.errorText.textContent = message;
    el.error.hidden = false;
  }
  function clearError() {
    el.error.hidden = true;
    el.errorText.textContent = "";
  }
  el.errorClose.addEventListener("click", clearError);

  try { el.token.value = localStorage.getItem(TOKEN_KEY) || ""; } catch (_) { /* storage disabled */ }
  el.token.addEventListener("input", () => {
    try {
      if (el.token.value) localStorage.setItem(TOKEN_KEY, el.token.value);
      else localStorage.removeItem(TOKEN_KEY);
    } catch (_) { /* ignore */ }
  });

  function detailText(detail, status) {
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      // FastAPI validation errors: [{loc: [...], msg: "..."}]
      return detail.map((d) => (d && d.msg ? `${(d.loc || []).slice(1).join(".") || "request"}: ${d.msg}` : JSON.stringify(d))).join("; ");
    }
    if (detail) return JSON.stringify(detail);
    return `HTTP ${status}`;
  }

  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    const token = el.token.value.trim();
    if (token) headers.set("Authorization", `Bearer ${token}`);
    let resp;
    try {
      resp = await fetch(API + path, { ...options, headers });
    } catch (err) {
      throw new Error(`Network error: ${err.message || err}`);
    }
    if (resp.status === 204) return null;
    const text = await resp.text();
    let body = null;
    if (text) {
      try { body = JSON.parse(text); } catch (_) { body = null; }
    }
    if (!resp.ok) {
      const msg = body && "detail" in body ? detailText(body.detail, resp.status) : (text || resp.statusText);
      const error = new Error(`${resp.status} ${msg}`);
      error.status = resp.status;
      throw error;
    }
    return body;
  }

  /* ---------- status ---------- */

  function setStatus(kind, text) {
    el.status.dataset.state = kind;
    el.statusText.textContent = text;
  }

  async function pollReady() {
    try {
      const r = await api("/ready");
      state.ready = !!(r && r.ready);
      if (state.ready) {
        const parts = ["Ready"];
        if (r.model_id) parts.push(`model ${r.model_id}`);
        if (r.finetune_job) parts.push(`fine-tuned (job ${r.finetune_job}) from ${r.base_weights}`);
        else if (r.weights) parts.push(`weights ${r.weights}`);
        if (typeof r.classes === "number") parts.push(`${r.classes} class${r.classes === 1 ? "" : "es"}`);
        setStatus("ready", parts.join(" · "));
        setConfidenceMode(typeof r.confidence_threshold === "number" ? r.confidence_threshold : null);
      } else {
        setStatus("loading", "Model loading…");
        setTimeout(pollReady, 2000);
      }
    } catch (err) {
      state.ready = false;
      setStatus(err.status === 503 ? "loading" : "down", err.status === 503 ? "Model loading…" : `Not ready: ${err.message}`);
      setTimeout(pollReady, 3000);
    }
    updateButtons();
  }

  /* ---------- photo ---------- */

  function isImage(file) {
    return file && (!file.type || file.type.startsWith("image/"));
  }

  function loadPhoto(file) {
    if (!isImage(file)) { showError("Please choose an image file."); return; }
    clearError();
    const url = URL.createObjectURL(file);
    const img = new Image();
    img.onload = () => {
      state.photoFile = file;
      state.photo = img;
      state.width = img.naturalWidth;
      state.height = img.naturalHeight;
      el.canvas.dataset.size = `${state.width}x${state.height}`;
      el.canvas.hidden = false;
      el.dropzone.dataset.empty = "false";
      fitCanvas();
      state.selection = null;
      state.trainBoxes = [];
      renderTrainBoxes();
      setResponse(null);
      updateSelectionInfo();
      updateButtons();
      redraw();
    };
    img.onerror = () => {
      URL.revokeObjectURL(url);
      showError(`Cannot read "${file.name}" as an image.`);
    };
    img.src = url;
  }

  el.photoInput.addEventListener("change", () => {
    if (el.photoInput.files && el.photoInput.files[0]) loadPhoto(el.photoInput.files[0]);
  });

  ["dragenter", "dragover"].forEach((type) => el.dropzone.addEventListener(type, (e) => {
    e.preventDefault();
    el.dropzone.classList.add("dragging");
  }));
  ["dragleave", "drop"].forEach((type) => el.dropzone.addEventListener(type, (e) => {
    e.preventDefault();
    el.dropzone.classList.remove("dragging");
  }));
  el.dropzone.addEventListener("drop", (e) => {
    const file = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
    if (file) loadPhoto(file);
  });

  /* ---------- drawing ---------- */

  function colorFor(label) {
    if (!state.colors.has(label)) state.colors.set(label, PALETTE[state.colors.size % PALETTE.length]);
    return state.colors.get(label);
  }

  // The slider's leftmost position means "no threshold": scores are cosine correlations and can be negative.
  function thresholdOff() {
    return parseFloat(el.threshold.value) <= parseFloat(el.threshold.min);
  }

  // With calibrated weights the slider filters on confidence (the probability that a detection is correct) and
  // starts at the weights' threshold (precision >= 0.9 on their validation data); else on the raw score, off.
  function setConfidenceMode(threshold) {
    const was = state.confidenceThreshold;
    state.confidenceThreshold = threshold;
    el.thresholdKind.textContent = threshold === null ? "Score" : "Confidence";
    if (threshold !== null && was === undefined) el.threshold.value = String(Math.round(threshold * 100) / 100);
    applyThreshold();
  }

  function filterValue(d) {
    return state.confidenceThreshold !== null && typeof d.confidence === "number" ? d.confidence : d.score;
  }

  function visibleDetections() {
    if (!state.response) return [];
    if (thresholdOff()) return state.response.detections.slice();
    const t = parseFloat(el.threshold.value);
    return state.response.detections.filter((d) => filterValue(d) >= t - 1e-9);
  }

  // Display size: the photo scaled to fit the panel (width) and ~72% of the window height; the canvas
  // buffer matches the displayed size times devicePixelRatio so boxes and labels stay crisp.
  function fitCanvas() {
    if (!state.photo) return;
    const style = getComputedStyle(el.dropzone);
    const availW = Math.max(50, el.dropzone.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight));
    const availH = Math.max(240, window.innerHeight * 0.72);
    const fit = Math.min(availW / state.width, availH / state.height, 3);
    const dispW = state.width * fit;
    const dispH = state.height * fit;
    el.canvas.style.width = `${dispW}px`;
    el.canvas.style.height = "auto"; // follows the buffer's aspect ratio, also under max-width
    const dpr = Math.min(window.devicePixelRatio || 1, 3);
    const maxSide = 4096;
    const bufScale = Math.min(dpr, maxSide / Math.max(dispW, dispH));
    el.canvas.width = Math.max(1, Math.round(dispW * bufScale));
    el.canvas.height = Math.max(1, Math.round(dispH * bufScale));
    state.sx = el.canvas.width / state.width;
    state.sy = el.canvas.height / state.height;
    state.px = state.width / dispW; // original pixels per CSS pixel
    redraw();
  }

  function redraw() {
    if (!state.photo) return;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, el.canvas.width, el.canvas.height);
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(state.photo, 0, 0, el.canvas.width, el.canvas.height);
    // Everything else is drawn in original-image pixels; line widths are kept constant on screen.
    ctx.setTransform(state.sx, 0, 0, state.sy, 0, 0);
    const px = state.px || 1;

    const dets = visibleDetections();
    // Draw low scores first so the best detections are on top.
    const ordered = dets.slice().sort((a, b) => a.score - b.score);
    const best = ordered.length ? Math.max(ordered[ordered.length - 1].score, 1e-6) : 1;
    for (const d of ordered) {
      // Weaker detections are drawn fainter so the best ones stand out.
      ctx.globalAlpha = Math.max(0.35, Math.min(1, d.score / best));
      drawDetection(d, px);
    }
    ctx.globalAlpha = 1;
    state.drawn = dets.length;
    el.canvas.dataset.drawn = String(dets.length);

    const unknown = (state.response && state.response.unknown) || [];
    for (const u of unknown) drawUnknown(u, px);
    state.drawnUnknown = unknown.length;
    el.canvas.dataset.unknown = String(unknown.length);
    if (el.reportRows.checked && state.report) drawRows(state.report, px);
    for (const t of state.trainBoxes) drawTrainBox(t, px);
    el.canvas.dataset.training = String(state.trainBoxes.length);
    if (state.selection) drawSelection(state.selection, px);
  }

  // A training box of the current photo: a thick solid frame in its class colour with a check mark.
  function drawTrainBox(t, px) {
    const [x1, y1, x2, y2] = t.box;
    ctx.setLineDash([]);
    ctx.lineWidth = 5 * px;
    ctx.strokeStyle = "rgba(255, 255, 255, 0.9)";
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.lineWidth = 3 * px;
    ctx.strokeStyle = colorFor(t.class);
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.font = `${13 * px}px system-ui, sans-serif`;
    ctx.fillStyle = colorFor(t.class);
    ctx.textBaseline = "bottom";
    ctx.fillText(`✓ ${t.class}`, x1 + 3 * px, y2 - 3 * px);
  }

  // An unknown item: a grey dashed box, "unknown ≈ closest class".
  function drawUnknown(u, px) {
    const [x1, y1, x2, y2] = u.box_xyxy;
    ctx.strokeStyle = "#555";
    ctx.lineWidth = 2 * px;
    ctx.setLineDash([5 * px, 4 * px]);
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.setLineDash([]);
    const text = `unknown ≈ ${u.closest}`;
    const fontPx = 12 * px;
    ctx.font = `600 ${fontPx}px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif`;
    const th = fontPx * 1.35;
    ctx.fillStyle = "rgba(60, 60, 60, 0.85)";
    ctx.fillRect(x1, Math.max(0, y1 - th), ctx.measureText(text).width + 8 * px, th);
    ctx.fillStyle = "#fff";
    ctx.textBaseline = "middle";
    ctx.fillText(text, x1 + 4 * px, Math.max(0, y1 - th) + th / 2);
  }

  // Shelf rows of the report: a tinted band per row with "row N" at its left.
  function drawRows(report, px) {
    report.rows.forEach((r, i) => {
      ctx.fillStyle = i % 2 === 0 ? "rgba(255, 220, 0, 0.18)" : "rgba(0, 180, 255, 0.18)";
      ctx.fillRect(0, r.top, state.width, r.bottom - r.top);
      const text = `row ${r.row}`;
      const fontPx = 13 * px;
      ctx.font = `600 ${fontPx}px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif`;
      const th = fontPx * 1.35;
      ctx.fillStyle = "rgba(20, 20, 20, 0.85)";
      ctx.fillRect(0, r.top, ctx.measureText(text).width + 8 * px, th);
      ctx.fillStyle = "#fff";
      ctx.textBaseline = "middle";
      ctx.fillText(text, 4 * px, r.top + th / 2);
    });
  }

  function drawDetection(d, px) {
    const color = colorFor(d.label);
    const [x1, y1, x2, y2] = d.box_xyxy;
    ctx.lineJoin = "round";
    // Axis-aligned box.
    ctx.strokeStyle = color;
    ctx.lineWidth = 2 * px;
    ctx.setLineDash([]);
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    // Alignment parallelogram: corners are TL, TR, BL, BR -> polygon TL, TR, BR, BL.
    if (Array.isArray(d.corners_xy) && d.corners_xy.length === 4) {
      const [tl, tr, bl, br] = d.corners_xy;
      ctx.beginPath();
      ctx.moveTo(tl[0], tl[1]);
      ctx.lineTo(tr[0], tr[1]);
      ctx.lineTo(br[0], br[1]);
      ctx.lineTo(bl[0], bl[1]);
      ctx.closePath();
      const alpha = ctx.globalAlpha;
      ctx.globalAlpha = alpha * 0.12;
      ctx.fillStyle = color;
      ctx.fill();
      ctx.globalAlpha = alpha;
      ctx.lineWidth = 1.5 * px;
      ctx.setLineDash([6 * px, 4 * px]);
      ctx.stroke();
      ctx.setLineDash([]);
    }
    // Label.
    const text = typeof d.confidence === "number"
      ? `${d.label} ${Math.round(d.confidence * 100)}%` : `${d.label} ${d.score.toFixed(2)}`;
    const fontPx = 13 * px;
    ctx.font = `600 ${fontPx}px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif`;
    const tw = ctx.measureText(text).width;
    const th = fontPx * 1.35;
    const pad = 4 * px;
    let ly = y1 - th;
    if (ly < 0) ly = y1; // no room above: put the label inside the box
    const lx = Math.min(Math.max(0, x1), Math.max(0, state.width - tw - 2 * pad));
    ctx.fillStyle = color;
    ctx.fillRect(lx, ly, tw + 2 * pad, th);
    ctx.fillStyle = "#fff";
    ctx.textBaseline = "middle";
    ctx.fillText(text, lx + pad, ly + th / 2);
  }

  function drawSelection(sel, px) {
    const w = sel.x2 - sel.x1;
    const h = sel.y2 - sel.y1;
    ctx.fillStyle = "rgba(37, 99, 235, 0.15)";
    ctx.fillRect(sel.x1, sel.y1, w, h);
    ctx.lineWidth = 2 * px;
    ctx.strokeStyle = "#fff";
    ctx.setLineDash([]);
    ctx.strokeRect(sel.x1, sel.y1, w, h);
    ctx.strokeStyle = "#2563eb";
    ctx.setLineDash([6 * px, 4 * px]);
    ctx.strokeRect(sel.x1, sel.y1, w, h);
    ctx.setLineDash([]);
  }

  let resizeTimer = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(fitCanvas, 60);
  });

  /* ---------- box selection with pointer (mouse, pen, touch) ---------- */

  function toImage(e) {
    const rect = el.canvas.getBoundingClientRect();
    const x = ((e.clientX - rect.left) / rect.width) * state.width;
    const y = ((e.clientY - rect.top) / rect.height) * state.height;
    return {
      x: Math.min(Math.max(x, 0), state.width),
      y: Math.min(Math.max(y, 0), state.height),
    };
  }

  el.canvas.addEventListener("pointerdown", (e) => {
    if (!state.photo || e.button > 0) return;
    e.preventDefault();
    const p = toImage(e);
    state.drag = { x0: p.x, y0: p.y, pointerId: e.pointerId };
    try { el.canvas.setPointerCapture(e.pointerId); } catch (_) { /* ignore */ }
    state.selection = { x1: p.x, y1: p.y, x2: p.x, y2: p.y };
    redraw();
  });
  el.canvas.addEventListener("pointermove", (e) => {
    if (!state.drag || e.pointerId !== state.drag.pointerId) return;
    e.preventDefault();
    const p = toImage(e);
    state.selection = {
      x1: Math.min(state.drag.x0, p.x), y1: Math.min(state.drag.y0, p.y),
      x2: Math.max(state.drag.x0, p.x), y2: Math.max(state.drag.y0, p.y),
    };
    redraw();
    updateSelectionInfo();
  });
  function endDrag(e) {
    if (!state.drag || e.pointerId !== state.drag.pointerId) return;
    state.drag = null;
    const s = state.selection;
    if (s && (s.x2 - s.x1 < 4 || s.y2 - s.y1 < 4)) state.selection = null; // a click, not a box
    redraw();
    updateSelectionInfo();
    updateButtons();
    if (state.selection && !el.className.value) el.className.focus();
  }
  el.canvas.addEventListener("pointerup", endDrag);
  el.canvas.addEventListener("pointercancel", endDrag);

  function selectionBox() {
    const s = state.selection;
    if (!s) return null;
    const r = (v) => Math.round(v);
    return [r(s.x1), r(s.y1), r(s.x2), r(s.y2)];
  }

  function updateSelectionInfo() {
    const b = selectionBox();
    if (b) {
      el.selectionInfo.textContent = `Selected box ${b.join(", ")} (${b[2] - b[0]}×${b[3] - b[1]} px). Name it and press "Add class".`;
    } else if (state.photo) {
      el.selectionInfo.textContent = `Photo ${state.width}×${state.height} px. Drag a box around an object to make it a class.`;
    } else {
      el.selectionInfo.textContent = "Drag a box around an object on the photo to make it a class.";
    }
    el.clearSelection.disabled = !b;
  }

  el.clearSelection.addEventListener("click", () => {
    state.selection = null;
    redraw();
    updateSelectionInfo();
    updateButtons();
  });

  /* ---------- gallery ---------- */

  async function loadGallery() {
    try {
      const r = await api("/classes");
      state.classes = (r && r.classes) || [];
      renderGallery();
      renderNegativeOptions();
      updateButtons();
    } catch (err) {
      showError(`Cannot list classes: ${err.message}`);
    }
  }

  function renderGallery() {
    el.gallery.replaceChildren();
    const names = new Set(state.classes.map((c) => c.name));
    for (const n of [...state.unchecked]) if (!names.has(n)) state.unchecked.delete(n);
    state.classes.forEach((c, i) => {
      const li = document.createElement("li");
      li.className = "gallery-item";
      li.dataset.name = c.name;

      const cb = document.createElement("input");
      cb.type = "checkbox";
      cb.id = `cls-${i}`;
      cb.checked = !state.unchecked.has(c.name);
      cb.addEventListener("change", () => {
        if (cb.checked) state.unchecked.delete(c.name);
        else state.unchecked.add(c.name);
        updateButtons();
      });

      const label = document.createElement("label");
      label.htmlFor = cb.id;
      label.className = "gallery-label";
      const thumb = document.createElement(c.thumbnail_url ? "img" : "span");
      thumb.className = "thumb";
      if (c.thumbnail_url) {
        thumb.src = c.thumbnail_url;
        thumb.alt = "";
        thumb.loading = "lazy";
      }
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = colorFor(c.name);
      const text = document.createElement("span");
      text.className = "gallery-text";
      const name = document.createElement("span");
      name.className = "gallery-name";
      name.textContent = c.name;
      const meta = document.createElement("span");
      meta.className = "muted small";
      const n = c.num_images ?? 1;
      const neg = c.num_negatives ?? 0;
      meta.textContent = `${n} image${n === 1 ? "" : "s"}` + (neg ? ` · ${neg} negative${neg === 1 ? "" : "s"}` : "");
      text.append(name, meta);
      label.append(thumb, swatch, text);

      const del = document.createElement("button");
      del.type = "button";
      del.className = "icon-btn danger";
      del.textContent = "×";
      del.title = `Delete ${c.name}`;
      del.setAttribute("aria-label", `Delete class ${c.name}`);
      del.addEventListener("click", () => deleteClass(c.name));

      li.append(cb, label, del);
      el.gallery.append(li);
    });
    el.galleryEmpty.hidden = state.classes.length > 0;
    updateButtons();
  }

  function checkedClasses() {
    return state.classes.map((c) => c.name).filter((n) => !state.unchecked.has(n));
  }

  el.selectAll.addEventListener("click", () => { state.unchecked.clear(); renderGallery(); });
  el.selectNone.addEventListener("click", () => {
    state.classes.forEach((c) => state.unchecked.add(c.name));
    renderGallery();
  });

  // The picture of a new class or negative: the box drawn on the photo, else the chosen picture file.
  function pictureForm(name) {
    const form = new FormData();
    form.append("name", name);
    const box = selectionBox();
    const picture = el.classImageInput.files && el.classImageInput.files[0];
    if (box && state.photoFile) {
      form.append("image", state.photoFile, state.photoFile.name || "photo.png");
      form.append("box", box.join(","));
    } else if (picture) {
      form.append("image", picture, picture.name || "class.png");
    } else {
      showError("Draw a box on the photo or choose a class picture first.");
      return null;
    }
    return { form, box };
  }

  function pictureUsed(box) {
    el.classImageInput.value = "";
    if (box) state.selection = null;
    redraw();
    updateSelectionInfo();
  }

  async function addClass() {
    clearError();
    const name = el.className.value.trim();
    if (!name) { showError("Enter a class name first."); el.className.focus(); return; }
    if (name.includes(",")) { showError("Class names cannot contain commas."); return; }
    const picked = pictureForm(name);
    if (!picked) return;
    el.addClass.disabled = true;
    showClassWarnings(null, []);
    try {
      const rec = await api("/classes", { method: "POST", body: picked.form });
      showClassWarnings(name, (rec && rec.warnings) || []);
      state.unchecked.delete(name);
      el.className.value = "";
      pictureUsed(picked.box);
      await loadGallery();
      pollReadyOnce();
    } catch (err) {
      showError(`Cannot add class "${name}": ${err.message}`);
    } finally {
      updateButtons();
    }
  }
  el.addClass.addEventListener("click", addClass);

  async function addNegative() {
    clearError();
    const name = el.negativeOf.value;
    if (!name) { showError("Add the class first, then its negatives."); return; }
    const picked = pictureForm(name);
    if (!picked) return;
    el.addNegative.disabled = true;
    try {
      await api("/negatives", { method: "POST", body: picked.form });
      pictureUsed(picked.box);
      await loadGallery();
    } catch (err) {
      showError(`Cannot add a negative of "${name}": ${err.message}`);
    } finally {
      updateButtons();
    }
  }
  el.addNegative.addEventListener("click", addNegative);

  function showClassWarnings(name, warnings) {
    // The service checks each class picture (os2d.exemplar): small, blurred, mostly background, a look-alike.
    el.classWarnings.replaceChildren(...warnings.map((w) => {
      const li = document.createElement("li");
      li.dataset.kind = w.kind;
      li.textContent = `"${name}": ${w.message}`;
      return li;
    }));
    el.classWarnings.hidden = warnings.length === 0;
  }
  el.className.addEventListener("keydown", (e) => { if (e.key === "Enter") addClass(); });

  async function deleteClass(name) {
    clearError();
    if (!window.confirm(`Delete class "${name}"?`)) return;
    try {
      await api(`/classes/${encodeURIComponent(name)}`, { method: "DELETE" });
      state.unchecked.delete(name);
      await loadGallery();
      pollReadyOnce();
    } catch (err) {
      showError(`Cannot delete class "${name}": ${err.message}`);
    }
  }

  async function pollReadyOnce() {
    if (state.ready) { state.ready = false; await pollReady(); }
  }

  /* ---------- detection ---------- */

  async function detect() {
    clearError();
    if (!state.photoFile) { showError("Choose a photo first."); return; }
    const classes = checkedClasses();
    if (!classes.length) { showError("Tick at least one class in the gallery."); return; }
    const form = new FormData();
    form.append("image", state.photoFile, state.photoFile.name || "photo.png");
    form.append("classes", classes.join(","));
    const maxDet = parseInt(el.maxDetections.value, 10);
    if (Number.isFinite(maxDet) && maxDet > 0) form.append("max_detections", String(maxDet));
    if (el.serverThreshold.value !== "") form.append("score_threshold", el.serverThreshold.value);
    if (el.imageSize.value !== "") form.append("image_size", el.imageSize.value);
    if (el.scales.value.trim()) form.append("scales", el.scales.value.replace(/\s+/g, ""));
    if (el.showUnknown.checked) form.append("unknown", "true");

    state.busy = true;
    el.spinner.hidden = false;
    el.detect.setAttribute("aria-busy", "true");
    updateButtons();
    try {
      const r = await api("/detect", { method: "POST", body: form });
      (r.classes || []).forEach(colorFor);
      setResponse(r);
    } catch (err) {
      showError(`Detection failed: ${err.message}`);
    } finally {
      state.busy = false;
      el.spinner.hidden = true;
      el.detect.removeAttribute("aria-busy");
      updateButtons();
    }
  }
  el.detect.addEventListener("click", detect);

  function setResponse(r) {
    if (r) r.detections = (r.detections || []).slice().sort((a, b) => b.score - a.score);
    state.response = r;
    el.detTime.textContent = r && typeof r.seconds === "number" ? ` · ${r.seconds.toFixed(2)} s` : "";
    const nu = r && Array.isArray(r.unknown) ? r.unknown.length : null;
    el.unknownCount.textContent = nu === null ? "" : ` · ${nu} unknown item${nu === 1 ? "" : "s"}`;
    el.downloadJson.disabled = !r;
    applyThreshold();
  }

  function applyThreshold() {
    el.thresholdValue.textContent = thresholdOff() ? "off (all)" : `≥ ${parseFloat(el.threshold.value).toFixed(2)}`;
    const dets = visibleDetections();
    el.detCount.textContent = String(dets.length);
    el.detTotal.textContent = String(state.response ? state.response.detections.length : 0);
    renderResults(dets);
    redraw();
    scheduleReport();
    updateTrainButtons();
  }
  el.threshold.addEventListener("input", applyThreshold);
  el.threshold.addEventListener("change", applyThreshold);

  /* ---------- shelf report (computed by the server: POST /report, no model work) ---------- */

  let reportTimer = null;
  function scheduleReport() {
    clearTimeout(reportTimer);
    reportTimer = setTimeout(updateReport, 150);
  }

  async function updateReport() {
    const seq = ++state.reportSeq;
    if (!state.response) {
      state.report = null;
      renderReport();
      return;
    }
    const body = { detections: visibleDetections(), min_score: null };
    if (!el.reportOneLabel.checked) body.one_label_iou = null;  // checked: the server's default IoU
    if (el.planogram.value.trim()) body.planogram = el.planogram.value;
    try {
      const r = await api("/report", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      if (seq !== state.reportSeq) return;
      state.report = r;
      el.planogram.removeAttribute("aria-invalid");
    } catch (err) {
      if (seq !== state.reportSeq) return;
      state.report = null;
      el.planogram.setAttribute("aria-invalid", "true");
      showError(`Shelf report: ${err.message}`);
    }
    renderReport();
    redraw();
  }
  el.reportRows.addEventListener("change", redraw);
  el.reportOneLabel.addEventListener("change", scheduleReport);
  el.planogram.addEventListener("input", scheduleReport);

  function cell(text, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text;
    return td;
  }

  function renderReport() {
    const tbody = el.report.tBodies[0];
    tbody.replaceChildren();
    const ptbody = el.planogramResult.tBodies[0];
    ptbody.replaceChildren();
    const r = state.report;
    el.report.dataset.rows = r ? String(r.rows.length) : "0";
    if (!r) {
      el.reportSummary.textContent = state.response ? "" : "Run a detection to see the report.";
      el.planogramResult.hidden = true;
      return;
    }
    const counts = Object.entries(r.facings).sort((a, b) => b[1] - a[1]);
    el.reportSummary.textContent = counts.length
      ? `${r.items.length} facing${r.items.length === 1 ? "" : "s"} in ${r.rows.length} row${r.rows.length === 1 ? "" : "s"}: ` +
        counts.map(([name, n]) => `${name} × ${n}`).join(", ")
      : "No detections shown: nothing to report.";
    for (const row of r.rows) {
      const tr = document.createElement("tr");
      tr.className = "shelf-row";
      const products = document.createElement("td");
      for (const name of row.classes) {
        const chip = document.createElement("span");
        chip.className = "chip";
        const sw = document.createElement("span");
        sw.className = "swatch";
        sw.style.background = colorFor(name);
        const label = document.createElement("span");
        label.textContent = name;
        chip.append(sw, label);
        products.append(chip);
      }
      tr.append(cell(String(row.row), "num"), cell(String(row.classes.length), "num"), products);
      tbody.append(tr);
    }
    el.planogramResult.hidden = !r.planogram;
    for (const line of r.planogram || []) {
      const tr = document.createElement("tr");
      tr.className = `plan ${line.status}`;
      tr.dataset.status = line.status;
      tr.append(cell(line.class), cell(String(line.row), "num"), cell(String(line.expected), "num"),
                cell(String(line.found), "num"), cell(line.status, "status"));
      ptbody.append(tr);
    }
  }

  function renderResults(dets) {
    const tbody = el.results.tBodies[0];
    tbody.replaceChildren();
    if (!dets.length) {
      const tr = document.createElement("tr");
      tr.className = "empty";
      const td = document.createElement("td");
      td.colSpan = 4;
      td.textContent = state.response ? "No detections above the threshold." : "Run a detection to see results.";
      tr.append(td);
      tbody.append(tr);
      return;
    }
    dets.forEach((d, i) => {
      const tr = document.createElement("tr");
      tr.className = "det";
      tr.dataset.label = d.label;
      const idx = document.createElement("td");
      idx.textContent = String(i + 1);
      const lab = document.createElement("td");
      lab.className = "label";
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = colorFor(d.label);
      const name = document.createElement("span");
      name.textContent = d.label;
      lab.append(sw, name);
      const score = document.createElement("td");
      score.className = "num";
      score.textContent = typeof d.confidence === "number"
        ? `${d.score.toFixed(3)} (${Math.round(d.confidence * 100)}%)` : d.score.toFixed(3);
      if (typeof d.confidence === "number") score.title = "score (confidence: the calibrated chance it is correct)";
      const box = document.createElement("td");
      box.className = "num mono";
      box.textContent = d.box_xyxy.map((v) => Math.round(v)).join(", ");
      tr.append(idx, lab, score, box);
      tbody.append(tr);
    });
  }

  el.downloadJson.addEventListener("click", () => {
    if (!state.response) return;
    const blob = new Blob([JSON.stringify(state.response, null, 2)], { type: "application/json" });
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    const base = state.photoFile && state.photoFile.name ? state.photoFile.name.replace(/\.[^.]+$/, "") : "photo";
    a.href = url;
    a.download = `detections-${base}.json`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  });

  function updateButtons() {
    el.detect.disabled = state.busy || !state.photoFile || checkedClasses().length === 0;
    el.addClass.disabled = false;
    el.addNegative.disabled = state.classes.length === 0;
    updateTrainButtons();
  }

  // A <select> of the gallery's classes (the chosen one kept across gallery reloads).
  function fillClassSelect(select) {
    const current = select.value;
    select.replaceChildren(...state.classes.map((c) => {
      const o = document.createElement("option");
      o.value = c.name;
      o.textContent = c.name;
      return o;
    }));
    if (state.classes.some((c) => c.name === current)) select.value = current;
  }

  // The classes a negative, or a drawn training box, can belong to.
  function renderNegativeOptions() {
    fillClassSelect(el.negativeOf);
    fillClassSelect(el.trainClass);
  }

  /* ---------- fine-tune: training photos and jobs ---------- */

  function updateTrainButtons() {
    const running = state.job && state.job.state === "running";
    el.trainAddDetections.disabled = !state.photoFile || visibleDetections().length === 0;
    el.trainAddBox.disabled = !state.photoFile || !state.selection || state.classes.length === 0;
    el.trainSave.disabled = !state.photoFile || state.trainBoxes.length === 0;
    el.ftStart.disabled = running || state.trainPhotos < 2;
    el.ftStart.title = state.trainPhotos < 2 ? "Save at least 2 photos with boxes (better 10 or more)" : "";
  }

  function sameBox(a, b) {
    return a.class === b.class && a.box.every((v, i) => Math.abs(v - b.box[i]) < 1);
  }

  function addTrainBox(cls, box) {
    const t = { class: cls, box: box.map((v) => Math.round(v * 100) / 100) };
    if (!state.trainBoxes.some((b) => sameBox(b, t))) state.trainBoxes.push(t);
  }

  function renderTrainBoxes() {
    el.trainBoxes.replaceChildren(...state.trainBoxes.map((t, i) => {
      const li = document.createElement("li");
      li.dataset.label = t.class;
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = colorFor(t.class);
      const text = document.createElement("span");
      text.textContent = `${t.class} ${t.box.map((v) => Math.round(v)).join(",")}`;
      const del = document.createElement("button");
      del.type = "button";
      del.className = "icon-btn danger";
      del.textContent = "×";
      del.setAttribute("aria-label", `Remove training box ${i + 1} (${t.class})`);
      del.addEventListener("click", () => {
        state.trainBoxes.splice(i, 1);
        renderTrainBoxes();
        redraw();
      });
      li.append(sw, text, del);
      return li;
    }));
    updateTrainButtons();
  }

  el.trainAddDetections.addEventListener("click", () => {
    for (const d of visibleDetections()) addTrainBox(d.label, d.box_xyxy);
    renderTrainBoxes();
    redraw();
  });

  el.trainAddBox.addEventListener("click", () => {
    const b = selectionBox();
    if (!b || !el.trainClass.value) return;
    addTrainBox(el.trainClass.value, b);
    state.selection = null;
    renderTrainBoxes();
    redraw();
    updateSelectionInfo();
    updateButtons();
  });

  el.trainSave.addEventListener("click", async () => {
    if (!state.photoFile || !state.trainBoxes.length) return;
    clearError();
    const form = new FormData();
    form.append("image", state.photoFile);
    form.append("boxes", JSON.stringify(state.trainBoxes));
    el.trainSave.disabled = true;
    try {
      await api("/training/photos", { method: "POST", body: form });
      state.trainBoxes = [];
      renderTrainBoxes();
      redraw();
      await loadTraining();
    } catch (err) {
      showError(`Cannot save the training photo: ${err.message}`);
    } finally {
      updateTrainButtons();
    }
  });

  async function loadTraining() {
    try {
      const r = await api("/training/photos");
      state.trainPhotos = r.num_photos;
      const per = Object.entries(r.boxes_per_class).map(([k, v]) => `${k} × ${v}`).join(", ");
      el.trainSummary.textContent = r.num_photos
        ? `${r.num_photos} photo${r.num_photos === 1 ? "" : "s"}, ${r.num_boxes} boxes (${per})`
        : "No training photos yet.";
      el.trainPhotos.replaceChildren(...r.photos.map((p) => {
        const li = document.createElement("li");
        li.dataset.id = String(p.id);
        const text = document.createElement("span");
        text.textContent = `#${p.id} · ${p.width}×${p.height} · ${p.boxes.length} box${p.boxes.length === 1 ? "" : "es"}`;
        const del = document.createElement("button");
        del.type = "button";
        del.className = "icon-btn danger";
        del.textContent = "×";
        del.setAttribute("aria-label", `Delete training photo ${p.id}`);
        del.addEventListener("click", async () => {
          try {
            await api(`/training/photos/${p.id}`, { method: "DELETE" });
            await loadTraining();
          } catch (err) {
            showError(`Cannot delete training photo ${p.id}: ${err.message}`);
          }
        });
        li.append(text, del);
        return li;
      }));
      updateTrainButtons();
    } catch (err) {
      showError(`Cannot list training photos: ${err.message}`);
    }
  }

  function pct(v) {
    return typeof v === "number" ? `${(v * 100).toFixed(1)}` : "n/a";
  }

  function renderJob() {
    const job = state.job;
    const model = state.model;
    const running = job && job.state === "running";
    el.ftCancel.hidden = !running;
    el.ftResume.hidden = !job || !["interrupted", "cancelled", "failed"].includes(job.state);
    el.ftProgress.hidden = !running;
    el.ftStatus.dataset.state = job ? job.state : "none";
    el.ftTable.hidden = true;
    el.ftActivate.hidden = true;
    if (!job) {
      el.ftStatus.textContent = "";
    } else if (running) {
      el.ftProgress.max = job.steps;
      el.ftProgress.value = job.step;
      const what = { starting: "Starting", evaluating: "Checking the held-out photos", training: "Training" }[job.phase] || job.phase;
      el.ftStatus.textContent = `Fine-tune ${job.id}: ${what} · step ${job.step} / ${job.steps} (${job.photos} photos, ${job.boxes} boxes)`;
    } else if (job.state === "done" && job.result) {
      const res = job.result;
      el.ftStatus.textContent = `Fine-tune ${job.id} done in ${res.minutes} min: held-out mAP ${pct(res.before.mAP)}% → ${pct(res.after.mAP)}% · `
        + (res.better ? "better than the base model" : "NOT better: keep the base model (more photos or steps may help)");
      const rows = [["mAP@0.5", res.before.mAP, res.after.mAP], ["recall@0.5", res.before.recall, res.after.recall]];
      for (const [name, ap] of Object.entries(res.after.ap_per_class || {})) rows.push([`AP ${name}`, (res.before.ap_per_class || {})[name], ap]);
      el.ftTable.tBodies[0].replaceChildren(...rows.map(([name, b, a]) => {
        const tr = document.createElement("tr");
        for (const [text, cls] of [[name, ""], [pct(b), "num"], [pct(a), "num"]]) {
          const td = document.createElement("td");
          td.textContent = text;
          if (cls) td.className = cls;
          tr.append(td);
        }
        return tr;
      }));
      el.ftTable.hidden = false;
      el.ftActivate.hidden = !!(model && model.finetune_job === job.id);
      el.ftActivate.textContent = res.better ? "Use the fine-tuned model" : "Use it anyway";
    } else if (job.state === "failed") {
      el.ftStatus.textContent = `Fine-tune ${job.id} failed: ${job.error || "see the server log"}`;
    } else {
      el.ftStatus.textContent = `Fine-tune ${job.id} ${job.state} at step ${job.step} / ${job.steps}.`;
    }
    el.ftDeactivate.hidden = !(model && model.finetune_job);
    el.ftModel.textContent = model && model.finetune_job
      ? `Detecting with the fine-tuned model of job ${model.finetune_job} (made from ${model.base_weights}).`
      : (model ? `Detecting with ${model.base_weights}.` : "");
    updateTrainButtons();
  }

  async function loadJobs() {
    clearTimeout(state.jobTimer);
    try {
      const r = await api("/finetune");
      state.job = r.jobs.length ? r.jobs[0] : null;
      state.model = r.model;
      renderJob();
      if (state.job && state.job.state === "running") state.jobTimer = setTimeout(loadJobs, 1000);
    } catch (err) {
      showError(`Cannot read the fine-tune jobs: ${err.message}`);
    }
  }

  async function jobAction(path, options, what) {
    clearError();
    try {
      await api(path, { method: "POST", ...options });
    } catch (err) {
      showError(`${what}: ${err.message}`);
    }
    await loadJobs();
  }

  el.ftStart.addEventListener("click", () => {
    const form = new FormData();
    form.append("steps", String(parseInt(el.ftSteps.value, 10) || 200));
    jobAction("/finetune", { body: form }, "Cannot start the fine-tune");
  });
  el.ftCancel.addEventListener("click", () => state.job && jobAction(`/finetune/${state.job.id}/cancel`, {}, "Cannot cancel"));
  el.ftResume.addEventListener("click", () => state.job && jobAction(`/finetune/${state.job.id}/resume`, {}, "Cannot resume"));
  el.ftActivate.addEventListener("click", async () => {
    const job = state.job;
    if (!job || !job.result) return;
    const form = new FormData();
    if (!job.result.better) {
      if (!window.confirm("The fine-tuned model was not better on the held-out photos. Use it anyway?")) return;
      form.append("force", "true");
    }
    await jobAction(`/finetune/${job.id}/activate`, { body: form }, "Cannot switch to the fine-tuned model");
    pollReady();
  });
  el.ftDeactivate.addEventListener("click", async () => {
    await jobAction("/finetune/deactivate", {}, "Cannot switch back");
    pollReady();
  });

  /* ---------- start ---------- */

  // Small hook for tests and debugging: how many detections are drawn, the last response.
  window.os2dPage = {
    drawnCount: () => state.drawn,
    response: () => state.response,
    report: () => state.report,
    trainingBoxes: () => state.trainBoxes.slice(),
    imageToClient: (x, y) => {
      const rect = el.canvas.getBoundingClientRect();
      return { x: rect.left + (x / state.width) * rect.width, y: rect.top + (y / state.height) * rect.height };
    },
  };

  renderResults([]);
  updateSelectionInfo();
  updateButtons();
  pollReady();
  loadGallery();
  loadTraining();
  loadJobs();
})();
