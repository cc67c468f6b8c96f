// mmserve's search page: no build step, no dependencies. Talks to the API it is served from.
"use strict";

const KEY = "mmserve-api-key";
const $ = (id) => document.getElementById(id);
const thumbnails = [];

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

// The API key, asked once and kept for this browser session only.
async function call(path, { method = "GET", body, raw = false } = {}) {
  for (let attempt = 0; attempt < 2; attempt++) {
    const headers = { "Content-Type": "application/json" };
    const key = sessionStorage.getItem(KEY);
    if (key) headers.Authorization = `Bearer ${key}`;
    const response = await fetch(path, { method, headers, body: body && JSON.stringify(body) });
    if (response.status === 401 && attempt === 0) {
      const entered = window.prompt("This server needs an API key:");
      if (!entered) throw new Error("an API key is needed");
      sessionStorage.setItem(KEY, entered.trim());
      continue;
    }
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try { message = (await response.json()).error.message; } catch (_) { /* not JSON */ }
      throw new Error(message);
    }
    return raw ? response : response.json();
  }
  throw new Error("the API key was refused");
}

async function loadIndexes() {
  const { data } = await call("/v1/indexes");
  const select = $("index");
  select.replaceChildren(...data.map(({ name, size }) => new Option(`${name} (${size})`, name)));
  if (!data.length) status("this API serves no index: start it with --index NAME=PATH", true);
}

function clock(seconds) {
  const minutes = Math.floor(seconds / 60);
  return `${minutes}:${(seconds - 60 * minutes).toFixed(1).padStart(4, "0")}`;
}

// The item's source file: an image, a video cued at its moment (a media fragment), or a sound.
async function thumbnail(tile, index, hit) {
  try {
    const response = await call(`/v1/indexes/${encodeURIComponent(index)}/items/${hit.key}/media`, { raw: true });
    const url = URL.createObjectURL(await response.blob());
    thumbnails.push(url);
    const slot = tile.querySelector(".noimage");
    let element;
    if (hit.modality === "video") {
      element = document.createElement("video");
      element.src = hit.start != null ? `${url}#t=${hit.start},${hit.end}` : url;
      element.controls = true;
      element.muted = true;
      element.preload = "metadata";
    } else if (hit.modality === "audio") {
      element = document.createElement("div");
      element.className = "sound";
      const audio = document.createElement("audio");
      audio.src = url;
      audio.controls = true;
      audio.preload = "none";
      element.append(audio);
    } else {
      element = new Image();
      element.alt = slot.dataset.alt;
      element.src = url;
    }
    slot.replaceWith(element);
  } catch (error) {
    tile.querySelector(".noimage").textContent = "no preview";
  }
}

function show(result) {
  thumbnails.splice(0).forEach((url) => URL.revokeObjectURL(url));
  const tiles = result.data.map((hit) => {
    const tile = document.createElement("article");
    tile.className = "tile";
    tile.dataset.key = hit.key;
    tile.dataset.modality = hit.modality;
    const label = hit.caption || (hit.uri || `item ${hit.key}`).split("/").pop();
    tile.innerHTML = `<div class="noimage">loading</div><div class="meta"><span class="score"></span>
      <span class="kind"></span><span class="moment"></span><div class="caption"></div></div>`;
    tile.querySelector(".noimage").dataset.alt = label;
    tile.querySelector(".score").textContent = hit.score.toFixed(3);
    if (hit.modality !== "image") tile.querySelector(".kind").textContent = hit.modality;
    if (hit.modality === "video" && hit.start != null) {
      tile.querySelector(".moment").textContent = `${clock(hit.start)}–${clock(hit.end)}`;
    }
    tile.querySelector(".caption").textContent = label;
    tile.querySelector(".caption").title = [hit.uri, ...hit.tags].filter(Boolean).join(" · ");
    thumbnail(tile, result.index, hit);
    return tile;
  });
  $("results").replaceChildren(...tiles);
  status(`${result.data.length} results from ${result.index}`);
}

async function searchText(event) {
  event.preventDefault();
  const query = $("query").value.trim();
  if (!query) return;
  status("searching...");
  try {
    const modality = $("modality").value || null;
    show(await call("/v1/search", { method: "POST", body: { query, k: 24, modality, index: $("index").value || null } }));
  } catch (error) { status(error.message, true); }
}

function readAsBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

// A dropped video or sound: items like it (its pooled vector), within the chosen modality.
async function searchMedia(file, kind) {
  status(`finding what is like this ${kind}...`);
  const figure = $("query-image");
  figure.hidden = false;
  figure.querySelector("img").hidden = true;
  const preview = document.createElement(kind);
  preview.src = URL.createObjectURL(file);
  preview.controls = true;
  $("query-media").replaceChildren(preview);
  $("chips").replaceChildren();
  try {
    const body = { [kind]: await readAsBase64(file), k: 24, modality: $("modality").value || null,
                   index: $("index").value || null };
    show(await call("/v1/search", { method: "POST", body }));
  } catch (error) { status(error.message, true); }
}

async function searchImage(file) {
  if (!file) return;
  const kind = file.type.split("/")[0];
  if (kind === "video" || kind === "audio") return searchMedia(file, kind);
  status("finding look-alikes...");
  const figure = $("query-image");
  figure.hidden = false;
  figure.querySelector("img").hidden = false;
  figure.querySelector("img").src = URL.createObjectURL(file);
  $("query-media").replaceChildren();
  $("chips").replaceChildren();
  try {
    const image = await readAsBase64(file);
    const labels = $("labels").value.split(",").map((s) => s.trim()).filter(Boolean);
    const [hits, tags] = await Promise.all([
      call("/v1/search", { method: "POST", body: { image, k: 24, modality: $("modality").value || null,
                                                   index: $("index").value || null } }),
      labels.length ? call("/v1/classify", { method: "POST", body: { image, labels } }) : null,
    ]);
    show(hits);
    if (tags) {
      $("chips").replaceChildren(...tags.data.map(({ label, probability }) => {
        const chip = document.createElement("span");
        chip.className = "chip";
        chip.textContent = `${label} ${(100 * probability).toFixed(0)}%`;
        return chip;
      }));
    }
  } catch (error) { status(error.message, true); }
}

$("search-form").addEventListener("submit", searchText);
$("file").addEventListener("change", (event) => searchImage(event.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  searchImage(event.dataTransfer.files[0]);
});
loadIndexes().catch((error) => status(error.message, true));
