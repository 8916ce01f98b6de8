/**
 * The dashboard page: one HTML document, one stylesheet, one script, kept as
 * string constants so there is no build step and `bun build --compile` /
 * `deno compile` carry them along. The script builds every node with
 * `textContent`, never `innerHTML`, so names and messages from the network
 * cannot inject markup; the strict CSP forbids inline code anyway.
 *
 * @module
 */

/** `GET /`. */
export const INDEX_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ferry</title>
<link rel="stylesheet" href="/app.css">
<script src="/app.js" defer></script>
</head>
<body>
<header>
  <h1>ferry</h1>
  <span class="inbox" id="inbox"></span>
  <span class="status" id="status" data-state="connecting">connecting…</span>
</header>
<main>
  <section>
    <h2>Connections <span class="count" id="conn-count">0</span></h2>
    <table class="table" id="connections">
      <thead><tr>
        <th>Peer</th><th>Since</th><th>State</th><th class="num">Received</th><th class="num">Rate</th>
        <th class="num">RTT</th><th>Current file</th>
      </tr></thead>
      <tbody></tbody>
    </table>
    <p class="empty" id="conn-empty">No one is connected.</p>
  </section>
  <section>
    <h2>Images <span class="count" id="img-count">0</span></h2>
    <div class="gallery" id="gallery"></div>
    <p class="empty" id="img-empty">No images received yet.</p>
  </section>
  <div class="columns">
    <section>
      <h2>Other files <span class="count" id="file-count">0</span></h2>
      <table class="table" id="files">
        <thead><tr><th>Name</th><th class="num">Size</th><th>Received</th><th>From</th></tr></thead>
        <tbody></tbody>
      </table>
      <p class="empty" id="file-empty">No other files yet.</p>
    </section>
    <section>
      <h2>Messages <span class="count" id="msg-count">0</span></h2>
      <ol class="messages" id="messages"></ol>
      <p class="empty" id="msg-empty">No messages yet.</p>
    </section>
  </div>
</main>
</body>
</html>
`;

/** `GET /app.css`. */
export const APP_CSS = `:root {
  color-scheme: light dark;
  --bg: #f6f7f9; --fg: #1d2330; --muted: #6b7385; --card: #fff; --line: #e3e6ec; --accent: #2f6fed;
  --ok: #1f9d55; --warn: #c77d00;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
}
@media (prefers-color-scheme: dark) {
  :root { --bg: #14171d; --fg: #e6e9ef; --muted: #9aa3b5; --card: #1c2028; --line: #2c323d; --accent: #6b9bff; }
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg); }
header { display: flex; align-items: baseline; gap: 1rem; padding: .9rem 1.5rem; background: var(--card);
  border-bottom: 1px solid var(--line); }
h1 { margin: 0; font-size: 1.3rem; letter-spacing: .02em; }
.inbox { color: var(--muted); font-family: ui-monospace, monospace; font-size: .9em; }
.status { margin-left: auto; font-size: .85em; color: var(--muted); }
.status::before { content: ""; display: inline-block; width: .6em; height: .6em; border-radius: 50%;
  margin-right: .4em; background: var(--warn); }
.status[data-state="live"]::before { background: var(--ok); }
main { padding: 1rem 1.5rem 2rem; max-width: 1400px; margin: 0 auto; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: .8rem 1rem 1rem;
  margin-bottom: 1rem; min-width: 0; }
h2 { margin: 0 0 .6rem; font-size: 1rem; }
.count { display: inline-block; min-width: 1.6em; padding: 0 .45em; border-radius: 1em; background: var(--line);
  color: var(--muted); font-size: .8em; text-align: center; font-weight: 500; }
.columns { display: grid; grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); gap: 1rem; }
.columns section { margin-bottom: 0; }
@media (max-width: 900px) { .columns { grid-template-columns: 1fr; } }
.table { width: 100%; border-collapse: collapse; }
.table th { text-align: left; font-weight: 500; color: var(--muted); font-size: .8em; text-transform: uppercase;
  letter-spacing: .04em; padding: .3rem .5rem; border-bottom: 1px solid var(--line); }
.table td { padding: .4rem .5rem; border-bottom: 1px solid var(--line); vertical-align: middle;
  overflow-wrap: anywhere; }
.table tr:last-child td { border-bottom: 0; }
.num, .table .num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.mono { font-family: ui-monospace, monospace; font-size: .92em; }
.state { display: inline-block; padding: 0 .5em; border-radius: 1em; font-size: .85em; background: var(--line); }
.state-receiving { background: #d9f2e3; color: #14663a; }
@media (prefers-color-scheme: dark) { .state-receiving { background: #17402a; color: #8fe0b0; } }
.current { display: flex; flex-direction: column; gap: .2rem; min-width: 12rem; }
.current small { color: var(--muted); }
progress { width: 100%; height: .5rem; accent-color: var(--accent); }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(190px, 1fr)); gap: .8rem; }
.tile { margin: 0; border: 1px solid var(--line); border-radius: 8px; overflow: hidden; background: var(--bg); }
.tile a { display: block; aspect-ratio: 4 / 3; background: var(--line); }
.tile img { display: block; width: 100%; height: 100%; object-fit: cover; }
.tile .placeholder { display: flex; width: 100%; height: 100%; align-items: center; justify-content: center;
  color: var(--muted); font-weight: 600; letter-spacing: .05em; }
.tile figcaption { padding: .4rem .55rem .5rem; display: flex; flex-direction: column; gap: .1rem; }
.tile .name { font-weight: 500; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.tile .meta { color: var(--muted); font-size: .82em; }
.messages { list-style: none; margin: 0; padding: 0; }
.messages li { padding: .45rem 0; border-bottom: 1px solid var(--line); }
.messages li:last-child { border-bottom: 0; }
.messages .text { white-space: pre-wrap; overflow-wrap: anywhere; }
.messages .from { color: var(--muted); font-size: .82em; }
.empty { color: var(--muted); margin: .2rem 0 0; }
.empty[hidden] { display: none; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
`;

/** `GET /app.js`. */
export const APP_JS = `"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const state = { connections: [], files: [], messages: [] };

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = String(text);
    return node;
  }
  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)) + " " + units[i];
  }
  function ago(iso) {
    const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 86400) return Math.floor(s / 3600) + " h ago";
    return new Date(iso).toLocaleDateString();
  }
  function clock(iso) {
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? "" : d.toLocaleString([], { dateStyle: "short", timeStyle: "short" });
  }
  function count(id, emptyId, n) {
    $(id).textContent = String(n);
    $(emptyId).hidden = n > 0;
  }

  function renderConnections() {
    const rows = state.connections.map((c) => {
      const tr = el("tr");
      tr.dataset.id = String(c.id);
      tr.append(
        el("td", "mono", c.peer),
        el("td", "", ago(c.since)),
        el("td"),
        el("td", "num", bytes(c.bytesReceived)),
        el("td", "num", c.rate > 0 ? bytes(c.rate) + "/s" : "–"),
        el("td", "num", c.rttMs === undefined ? "–" : c.rttMs + " ms"),
        el("td"),
      );
      tr.children[2].append(el("span", "state state-" + c.state, c.state));
      if (c.currentFile) {
        const f = c.currentFile;
        const box = el("div", "current");
        const bar = el("progress");
        bar.max = Math.max(1, f.size);
        bar.value = f.received;
        const pct = f.size > 0 ? Math.floor((100 * f.received) / f.size) : 100;
        box.append(el("span", "", f.name), bar, el("small", "", bytes(f.received) + " of " + bytes(f.size) + " · " + pct + "%"));
        tr.children[6].append(box);
      }
      return tr;
    });
    $("connections").tBodies[0].replaceChildren(...rows);
    count("conn-count", "conn-empty", rows.length);
  }

  function fileUrl(f) {
    return f.url;
  }
  // Tiles are kept across renders so their images are not fetched and decoded again.
  const tiles = new Map();
  function cachedTile(f) {
    const key = f.name + "\\0" + f.sha256 + "\\0" + f.receivedAt;
    let node = tiles.get(key);
    if (!node) tiles.set(key, node = tile(f));
    return node;
  }
  function tile(f) {
    const fig = el("figure", "tile");
    const link = el("a");
    link.href = fileUrl(f);
    link.target = "_blank";
    link.rel = "noopener";
    if (f.image && f.image.format !== "heic") {
      const img = el("img");
      img.loading = "lazy";
      img.decoding = "async";
      img.alt = f.name;
      img.width = f.image.width;
      img.height = f.image.height;
      img.src = fileUrl(f);
      // A format this browser cannot decode (HEIC, say) gets a labelled tile instead of a blank one.
      img.addEventListener("error", () => img.replaceWith(el("span", "placeholder", f.image.format.toUpperCase())));
      link.append(img);
    } else {
      link.append(el("span", "placeholder", (f.image ? f.image.format : "file").toUpperCase()));
    }
    const cap = el("figcaption");
    const name = el("span", "name", f.name);
    name.title = f.name;
    const dims = f.image.width + "×" + f.image.height;
    const when = f.image.takenAt ? "taken " + clock(f.image.takenAt) : ago(f.receivedAt);
    cap.append(name, el("span", "meta", dims + " · " + bytes(f.size)), el("span", "meta", when));
    fig.append(link, cap);
    return fig;
  }
  function renderFiles() {
    const images = state.files.filter((f) => f.image);
    const others = state.files.filter((f) => !f.image);
    $("gallery").replaceChildren(...images.map(cachedTile));
    count("img-count", "img-empty", images.length);
    $("files").tBodies[0].replaceChildren(...others.map((f) => {
      const tr = el("tr");
      const link = el("a", "", f.name);
      link.href = fileUrl(f);
      link.setAttribute("download", "");
      const name = el("td");
      name.append(link);
      tr.append(name, el("td", "num", bytes(f.size)), el("td", "", ago(f.receivedAt)), el("td", "mono", f.sender));
      return tr;
    }));
    count("file-count", "file-empty", others.length);
  }
  function renderMessages() {
    $("messages").replaceChildren(...state.messages.slice().reverse().map((m) => {
      const li = el("li");
      li.append(el("div", "text", m.text), el("div", "from", m.sender + " · " + clock(m.receivedAt)));
      return li;
    }));
    count("msg-count", "msg-empty", state.messages.length);
  }

  function status(live) {
    const s = $("status");
    s.dataset.state = live ? "live" : "connecting";
    s.textContent = live ? "live" : "reconnecting…";
  }

  let limit = 200;
  function connect() {
    const events = new EventSource("/events");
    events.addEventListener("open", () => status(true));
    events.addEventListener("error", () => status(false));
    events.addEventListener("snapshot", (e) => {
      const s = JSON.parse(e.data);
      limit = s.history || limit;
      $("inbox").textContent = s.inbox || "";
      state.connections = s.connections;
      state.files = s.files;
      state.messages = s.messages;
      renderConnections();
      renderFiles();
      renderMessages();
      status(true);
    });
    events.addEventListener("connections", (e) => {
      state.connections = JSON.parse(e.data);
      renderConnections();
    });
    events.addEventListener("file", (e) => {
      const f = JSON.parse(e.data);
      state.files = [f, ...state.files.filter((x) => x.name !== f.name)].slice(0, limit);
      renderFiles();
    });
    events.addEventListener("message", (e) => {
      state.messages = [...state.messages, JSON.parse(e.data)].slice(-limit);
      renderMessages();
    });
  }

  // Relative times ("12 s ago") age between updates.
  setInterval(() => {
    if (state.connections.length > 0) renderConnections();
  }, 5000);
  connect();
})();
`;
