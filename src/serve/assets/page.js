// The search page: the URL holds the search (?q=...&method=&label=&k= or ?like=ROW), so a search can be
// shared; every hit is a thumbnail of its region with the mask outlined.
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

async function api(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" } });
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
    method: u.get("method") || "", label: u.get("label") || "", k: u.get("k") || "24",
    group_by: u.get("group_by") || "", after: u.get("after") || "", before: u.get("before") || "",
  };
}

function go(change) {
  const p = { ...params(), ...change };
  if (change.q !== undefined) p.like = "";
  if (change.like !== undefined) p.q = "";
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
  if (!p.q && !p.like) { setStatus("", "idle"); return; }
  const f = new URLSearchParams({ k: p.k });
  if (p.method) f.set("method", p.method);
  if (p.label) f.set("label", p.label);
  if (p.group_by) f.set("group_by", p.group_by);
  if (p.after) f.set("after", p.after);
  if (p.before) f.set("before", dayAfter(p.before));
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

$("search").addEventListener("submit", (ev) => {
  ev.preventDefault();
  go({ q: $("q").value.trim(), method: $("method").value, label: $("label").value, k: $("k").value,
    group_by: $("group_by").value, after: $("after").value, before: $("before").value });
});
for (const id of ["method", "label", "k", "group_by", "after", "before"]) {
  $(id).addEventListener("change", () => { const p = params(); if (p.q || p.like) go({ [id]: $(id).value }); });
}
window.addEventListener("popstate", run);

(async () => {
  const p = params();
  try {
    const s = await api("/api/stats");
    photos = s.photos_served;
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
