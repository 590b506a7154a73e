// The search page: the URL holds the search (?q=...&method=&label=&k=, ?like=ROW, or ?region_row=ROW&box=...
// for a region of an indexed photo), so a search can be shared; every hit is a thumbnail of its region with the
// mask outlined. A photo chosen or dropped is searched by the region drawn on it.
"use strict";

const $ = (id) => document.getElementById(id);
const status = $("status");
const hitsEl = $("hits");
let photos = true;

function setStatus(text, state) {
  status.textContent = text;
  status.dataset.state = state;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

async function api(path, init) {
  const r = await fetch(path, { headers: { Accept: "application/json" }, ...(init || {}) });
  let body;
  try { body = await r.json(); } catch { body = { error: r.statusText }; }
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function fillSelect(select, items, current) {
  for (const it of items) {
    const o = el("option", { value: it.name }, `${it.name} (${it.regions})`);
    select.append(o);
  }
  if (current && ![...select.options].some((o) => o.value === current)) {
    select.append(el("option", { value: current }, current));
  }
  select.value = current || "";
}

function openViewer(hit) {
  const img = $("viewer-img");
  img.alt = `${hit.image}, region ${hit.region_id}`;
  img.src = photos ? `/api/regions/${hit.row}/overlay.jpg` : "";
  $("viewer-info").textContent =
    `${hit.image} · region ${hit.region_id}${hit.label ? " · " + hit.label : ""} · ${hit.method} · ` +
    `box [${hit.box.map((v) => Math.round(v)).join(", ")}]` + (hit.score !== undefined ? ` · score ${hit.score.toFixed(4)}` : "");
  $("viewer-region").hidden = !photos;
  $("viewer-region").onclick = () => { $("viewer").close(); openRegionRow(hit); };
  $("viewer").showModal();
}

function card(hit, rank) {
  const img = el("img", {
    alt: `${hit.label || "region"} in ${hit.image}`,
    loading: rank < 24 ? "eager" : "lazy",
    "data-row": hit.row,
  });
  img.addEventListener("load", () => { img.dataset.loaded = "1"; });
  img.addEventListener("error", () => { img.dataset.loaded = "error"; });
  const pic = el("button", { class: "pic", type: "button", title: "show the whole photo", onclick: () => openViewer(hit) });
  if (photos) {
    img.src = `/api/regions/${hit.row}/thumb.jpg`;
    pic.append(img);
  } else {
    pic.append(el("div", { class: "nopic" }, "no photos: start the server with --images DIR"));
  }
  const tags = el("div", { class: "tags" }, el("span", { class: "tag" }, hit.method));
  if (hit.label) tags.append(el("span", { class: "tag" }, hit.label));
  if (hit.other_matches) {
    tags.append(el("span", { class: "tag more-regions", title: "more regions of this photo matched" },
      `+${hit.other_matches} in this photo`));
  }
  return el("article", { class: "hit", "data-row": hit.row },
    pic,
    el("div", { class: "meta" },
      el("span", { class: "score" }, hit.score.toFixed(4)),
      el("span", { class: "where", title: hit.image }, `${hit.image} · ${hit.region_id}`),
      hit.taken_at || hit.camera
        ? el("span", { class: "taken" }, [hit.taken_at ? takenOn(hit.taken_at) : "", hit.camera || ""].filter(Boolean).join(" · "))
        : "",
      tags,
      el("button", { class: "more", type: "button", onclick: () => go({ like: hit.row }) }, "more like this"),
    ));
}

/// The day and time a photo was taken, as the camera wrote it ("2024-07-14T18:03:00+02:00" → "2024-07-14 18:03").
function takenOn(iso) {
  const m = /^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}))?/.exec(iso);
  return m ? (m[2] ? `${m[1]} ${m[2]}` : m[1]) : iso;
}

/// The day after a `YYYY-MM-DD`: "to" a day includes that day, the API's `before` excludes its instant.
function dayAfter(day) {
  const d = new Date(`${day}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + 1);
  return d.toISOString().slice(0, 10);
}

function params() {
  const u = new URLSearchParams(location.search);
  return {
    q: u.get("q") || "", like: u.get("like") || "",
    region_row: u.get("region_row") || "", box: u.get("box") || "",
    method: u.get("method") || "", label: u.get("label") || "", k: u.get("k") || "24",
    group_by: u.get("group_by") || "", after: u.get("after") || "", before: u.get("before") || "",
  };
}

function go(change) {
  const p = { ...params(), ...change };
  if (change.q !== undefined) { p.like = ""; p.region_row = ""; p.box = ""; }
  if (change.like !== undefined) { p.q = ""; p.region_row = ""; p.box = ""; }
  if (change.region_row !== undefined) { p.q = ""; p.like = ""; }
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(p)) if (v !== "" && v !== undefined) u.set(k, v);
  history.pushState(null, "", "/?" + u.toString());
  run();
}

async function run() {
  const p = params();
  $("q").value = p.q;
  $("method").value = p.method;
  $("label").value = p.label;
  $("k").value = p.k;
  $("group_by").value = p.group_by;
  $("after").value = p.after;
  $("before").value = p.before;
  hitsEl.replaceChildren();
  const f = filters(p);
  if (p.region_row) { await runRegionRow(p, f); return; }
  if (!p.q && !p.like) { setStatus("", "idle"); return; }
  let url, what;
  if (p.like) { url = `/api/similar/${encodeURIComponent(p.like)}?${f}`; what = `regions like row ${p.like}`; }
  else { f.set("q", p.q); url = `/api/search?${f}`; what = `“${p.q}”`; }
  setStatus(`searching ${what}…`, "busy");
  try {
    const r = await api(url);
    hitsEl.replaceChildren(...r.hits.map(card));
    const how = `${r.mode}${r.ef ? " ef " + r.ef : ""}, ${r.candidates} candidates, ${r.ms.toFixed(1)} ms` +
      (r.cached ? ", cached" : "") + (r.truncated ? "; the query was cut to the model's 77 tokens" : "");
    const found = p.group_by === "photo" ? `${r.hits.length} photos` : `${r.hits.length} regions`;
    setStatus(`${found} for ${what} (${how})`, "done");
  } catch (e) {
    setStatus(`${what}: ${e.message}`, "error");
  }
}

/// The search options of the page (k, filters, grouping) as API parameters.
function filters(p) {
  const f = new URLSearchParams({ k: p.k });
  if (p.method) f.set("method", p.method);
  if (p.label) f.set("label", p.label);
  if (p.group_by) f.set("group_by", p.group_by);
  if (p.after) f.set("after", p.after);
  if (p.before) f.set("before", dayAfter(p.before));
  return f;
}

// Search by region: a photo (chosen, dropped, or a hit's photo), a box dragged on it, or a click when the
// server has SAM. Boxes are kept in the photo's own pixels; the canvas shows it scaled.
const region = { source: null, image: null, width: 0, height: 0, scale: 1, drawn: null, sam: false, upright: false };
const canvas = $("region-canvas");
const ctx = canvas.getContext("2d");

function openRegionPanel() {
  $("region").hidden = false;
  $("region-hint").textContent = region.sam
    ? "or drop one here; then drag a box on it, or click a thing (SAM outlines it)"
    : "or drop one here; then drag a box on it";
}

function layoutRegion() {
  const room = Math.max(320, ($("region").clientWidth || 800) - 24);
  region.scale = Math.min(1, room / region.width, 520 / region.height);
  canvas.width = Math.round(region.width * region.scale);
  canvas.height = Math.round(region.height * region.scale);
  $("region-go").disabled = false;
  $("region-whole").disabled = false;
  drawRegion();
}

function drawRegion() {
  if (!region.image) return;
  ctx.drawImage(region.image, 0, 0, canvas.width, canvas.height);
  const d = region.drawn;
  if (!d) return;
  const s = region.scale;
  ctx.lineWidth = 3;
  ctx.strokeStyle = "#ff6a00";
  if (d.box) {
    const [x0, y0, x1, y1] = d.box.map((v) => v * s);
    ctx.fillStyle = "rgba(0,0,0,.35)";
    ctx.fillRect(0, 0, canvas.width, y0);
    ctx.fillRect(0, y1, canvas.width, canvas.height - y1);
    ctx.fillRect(0, y0, x0, y1 - y0);
    ctx.fillRect(x1, y0, canvas.width - x1, y1 - y0);
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
  }
  if (d.point) {
    ctx.beginPath();
    ctx.arc(d.point[0] * s, d.point[1] * s, 7, 0, 2 * Math.PI);
    ctx.stroke();
  }
}

async function openRegionFile(file) {
  if (!file) return;
  try {
    // In the frame the index's boxes are in: turned upright by EXIF only if the index's photos were.
    const bitmap = await createImageBitmap(file, { imageOrientation: region.upright ? "from-image" : "none" });
    Object.assign(region, { source: { file }, image: bitmap, width: bitmap.width, height: bitmap.height, drawn: null });
    openRegionPanel();
    layoutRegion();
    setStatus(`${file.name}: drag a box on it`, "idle");
  } catch (e) {
    setStatus(`${file.name}: this browser cannot show it (${e.message}); the server may still read it`, "error");
  }
}

/// A photo already in the index, by a row of one of its regions: drawn from the server, searched by row.
async function openRegionRow(hit, box) {
  const [height, width] = hit.mask_rle.size;
  const img = new Image();
  const loaded = new Promise((resolve, reject) => {
    img.onload = resolve;
    img.onerror = () => reject(new Error("the photo cannot be shown"));
  });
  img.src = `/api/regions/${hit.row}/overlay.jpg?size=1024`;
  try {
    await loaded;
  } catch (e) {
    setStatus(`${hit.image}: ${e.message}`, "error");
    return false;
  }
  Object.assign(region, { source: { row: hit.row, name: hit.image }, image: img, width, height, drawn: box ? { box } : null });
  openRegionPanel();
  layoutRegion();
  if (!box) setStatus(`${hit.image}: drag a box on it`, "idle");
  return true;
}

function photoPoint(ev) {
  const r = canvas.getBoundingClientRect();
  const x = (ev.clientX - r.left) * (canvas.width / r.width) / region.scale;
  const y = (ev.clientY - r.top) * (canvas.height / r.height) / region.scale;
  return [Math.min(Math.max(x, 0), region.width - 1), Math.min(Math.max(y, 0), region.height - 1)];
}

let dragFrom = null;
canvas.addEventListener("pointerdown", (ev) => {
  if (!region.image) return;
  dragFrom = photoPoint(ev);
  canvas.setPointerCapture(ev.pointerId);
});
canvas.addEventListener("pointermove", (ev) => {
  if (!dragFrom) return;
  const [x, y] = photoPoint(ev);
  region.drawn = { box: [Math.min(dragFrom[0], x), Math.min(dragFrom[1], y), Math.max(dragFrom[0], x), Math.max(dragFrom[1], y)].map(Math.round) };
  drawRegion();
});
canvas.addEventListener("pointerup", (ev) => {
  if (!dragFrom) return;
  const [x, y] = photoPoint(ev);
  const small = Math.abs(x - dragFrom[0]) * region.scale < 4 && Math.abs(y - dragFrom[1]) * region.scale < 4;
  if (small) region.drawn = region.sam ? { point: [Math.floor(x), Math.floor(y)] } : null;
  dragFrom = null;
  drawRegion();
});

async function searchRegion(whole) {
  const p = params();
  const f = filters(p);
  const d = whole ? null : region.drawn;
  if (!whole && !d) { setStatus("drag a box on the photo first" + (region.sam ? " (or click a thing)" : ""), "error"); return; }
  // A row's region search has an address (a point, which needs SAM's answer, is searched as its box); a
  // chosen photo's has none, so the address drops any earlier one.
  const change = region.source.row !== undefined
    ? { region_row: String(region.source.row), box: d && d.box ? d.box.join(",") : "" }
    : { region_row: "", box: "" };
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries({ ...p, ...change, q: "", like: "" })) if (v) u.set(k, v);
  history.pushState(null, "", "/?" + u.toString());
  const form = new FormData();
  if (region.source.file) form.append("image", region.source.file);
  else f.set("row", region.source.row);
  if (d && d.point) form.append("point", d.point.join(","));
  else if (d && d.box) form.append("box", d.box.join(","));
  const words = $("region-text").value.trim();
  // Weight 1 said outright, so that words such as "3:30 pm" are never read as a weight.
  if (words) form.append("text", "1:" + words);
  await showRegionAnswer(`/api/search/region?${f}`, form, region.source.file ? region.source.file.name : region.source.name);
}

async function showRegionAnswer(url, form, photoName) {
  const what = `the region of ${photoName}`;
  setStatus(`searching regions like ${what}… (the first query loads the vision tower)`, "busy");
  hitsEl.replaceChildren();
  try {
    const r = await api(url, { method: "POST", body: form });
    // A click keeps its point (searched again as it is), with the box of SAM's region drawn around it.
    if (region.drawn && region.drawn.point) region.drawn = { point: region.drawn.point, box: r.region.box };
    drawRegion();
    hitsEl.replaceChildren(...r.hits.map(card));
    const found = params().group_by === "photo" ? `${r.hits.length} photos` : `${r.hits.length} regions`;
    setStatus(`${found} like ${what} (embedded by ${r.region.method} in ${r.region.embed_ms.toFixed(0)} ms, ` +
      `searched in ${r.search_ms.toFixed(1)} ms, ${r.mode})`, "done");
  } catch (e) {
    setStatus(`${what}: ${e.message}`, "error");
  }
}

/// `?region_row=N&box=x0,y0,x1,y1`: a region of an indexed photo, from the URL (shareable, and how a test
/// drives the page).
async function runRegionRow(p, f) {
  let hit;
  try {
    hit = await api(`/api/regions/${encodeURIComponent(p.region_row)}`);
  } catch (e) {
    setStatus(`row ${p.region_row}: ${e.message}`, "error");
    return;
  }
  const box = p.box ? p.box.split(",").map(Number) : null;
  // The search runs even when the photo cannot be shown here (its hits are still worth seeing).
  await openRegionRow(hit, box);
  f.set("row", p.region_row);
  if (p.box) f.set("box", p.box);
  await showRegionAnswer(`/api/search/region?${f}`, new FormData(), hit.image);
}

$("by-region").addEventListener("click", () => { openRegionPanel(); if (!region.image) $("region-file").click(); });
$("region-file").addEventListener("change", (ev) => openRegionFile(ev.target.files[0]));
$("region-go").addEventListener("click", () => searchRegion(false));
$("region-whole").addEventListener("click", () => searchRegion(true));
$("region-close").addEventListener("click", () => { $("region").hidden = true; });
for (const target of [document.body]) {
  target.addEventListener("dragover", (ev) => { ev.preventDefault(); $("region").classList.add("drop"); });
  target.addEventListener("dragleave", () => $("region").classList.remove("drop"));
  target.addEventListener("drop", (ev) => {
    ev.preventDefault();
    $("region").classList.remove("drop");
    openRegionFile(ev.dataTransfer.files[0]);
  });
}

$("search").addEventListener("submit", (ev) => {
  ev.preventDefault();
  go({ q: $("q").value.trim(), method: $("method").value, label: $("label").value, k: $("k").value,
    group_by: $("group_by").value, after: $("after").value, before: $("before").value });
});
for (const id of ["method", "label", "k", "group_by", "after", "before"]) {
  $(id).addEventListener("change", () => { const p = params(); if (p.q || p.like || p.region_row) go({ [id]: $(id).value }); });
}
window.addEventListener("popstate", run);

(async () => {
  const p = params();
  try {
    const s = await api("/api/stats");
    photos = s.photos_served;
    region.sam = s.region_search.sam;
    region.upright = s.region_search.exif_rotated;
    fillSelect($("method"), s.index.methods.top, p.method);
    fillSelect($("label"), s.index.labels.top, p.label);
    $("about").textContent = `${s.index.regions} regions of ${s.index.images} photos · ${s.index.model}` +
      (s.index.model.startsWith("random:") ? " (random weights: scores carry no meaning)" : "");
  } catch (e) {
    setStatus(`cannot read the index: ${e.message}`, "error");
    return;
  }
  run();
})();
