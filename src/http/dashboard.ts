/**
 * The live web dashboard: a small node:http server (the same on Deno and
 * Bun) with the connection table, the received files and the recent
 * messages, updated over Server-Sent Events, plus a JSON API and the files
 * themselves.
 *
 * Only files that have a receipt are served, under their stored name, with
 * symlinks refused at every level, so nothing outside the inbox and nothing
 * under `.ferry/` is reachable. Images (by content) are shown inline; every
 * other file is served as a download.
 *
 * @module
 */
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import * as fs from "node:fs/promises";
import { constants as fsConstants } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import * as path from "node:path";
import { IMAGE_MIME, type ImageFormat } from "../images/formats.ts";
import type { Inbox, Receipt, ReceiptImage, StoredMessage } from "../store/inbox.ts";
import type { ServerEvents } from "../server/server.ts";
import type { ConnectionInfo } from "../server/session.ts";
import { APP_CSS, APP_JS, INDEX_HTML } from "./assets.ts";

/** Default dashboard address: loopback only. */
export const DEFAULT_HTTP_HOST = "127.0.0.1";

/**
 * Options for the dashboard (`ServerOptions.http`).
 *
 * @example
 * ```ts
 * import type { DashboardOptions } from "./dashboard.ts";
 * const http: DashboardOptions = { port: 8080, token: "s3cret" };
 * ```
 */
export interface DashboardOptions {
  /** TCP port; 0 picks a free one. */
  port: number;
  /** Listen address. Default `127.0.0.1`. */
  hostname?: string;
  /** When set, every request needs `Authorization: Bearer TOKEN`, or the cookie that `?token=TOKEN` sets. */
  token?: string;
  /** Files and messages listed (newest). Default 200. */
  history?: number;
  /** Live-update (SSE) clients at once; more get 503. Default 32. */
  maxClients?: number;
}

/** What the dashboard shows; a {@linkcode ServerHandle} is one. */
export interface DashboardSource {
  readonly inbox: Inbox;
  connections(): ConnectionInfo[];
  on<K extends keyof ServerEvents>(type: K, listener: (value: ServerEvents[K]) => void): () => void;
}

/** A running dashboard. */
export interface DashboardHandle {
  readonly hostname: string;
  readonly port: number;
  /** e.g. `http://127.0.0.1:8080/`. */
  readonly url: string;
  /** Ends live-update streams and stops listening. */
  close(): Promise<void>;
}

/**
 * A file as the dashboard lists it (`/api/files`, SSE `file` events).
 *
 * @example
 * ```ts
 * import type { FileEntry } from "./dashboard.ts";
 * const f: FileEntry = {
 *   name: "cat.png", size: 1234, sha256: "ab…", receivedAt: "2024-05-01T12:00:00.000Z", mtimeMs: 0,
 *   sender: "127.0.0.1:50000", url: "/files/cat.png", image: { format: "png", width: 64, height: 64 },
 * };
 * ```
 */
export interface FileEntry {
  name: string;
  size: number;
  sha256: string;
  receivedAt: string;
  mtimeMs: number;
  sender: string;
  /** Where `GET` fetches it: `/files/` plus the stored name, each component percent-encoded. */
  url: string;
  image?: ReceiptImage;
}

const COOKIE = "ferry_dashboard";
const CSP = "default-src 'none'; img-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
const TICK_MS = 1000;
const KEEPALIVE_TICKS = 15;
/** An SSE client this far behind is dropped rather than buffered without bound. */
const MAX_SSE_BACKLOG = 1024 * 1024;
const FILE_CHUNK = 256 * 1024;

/**
 * Starts the dashboard for a running server.
 *
 * @example
 * ```ts ignore
 * const server = await serve({ dir: "./inbox", port: 0 });
 * const dash = await startDashboard(server, { port: 0 });
 * console.log(dash.url);
 * await dash.close();
 * ```
 */
export async function startDashboard(
  source: DashboardSource,
  options: DashboardOptions,
): Promise<DashboardHandle> {
  const hostname = options.hostname ?? DEFAULT_HTTP_HOST;
  const history = options.history ?? 200;
  const maxClients = options.maxClients ?? 32;
  if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) {
    throw new RangeError(`Cannot start dashboard: port ${options.port} is not 0..65535`);
  }
  if (!Number.isSafeInteger(history) || history < 1) {
    throw new RangeError(`Cannot start dashboard: history ${history} must be a positive integer`);
  }
  if (!Number.isSafeInteger(maxClients) || maxClients < 1) {
    throw new RangeError(`Cannot start dashboard: maxClients ${maxClients} must be a positive integer`);
  }
  if (options.token !== undefined && options.token === "") {
    throw new TypeError("Cannot start dashboard: the token is empty");
  }
  const inbox = source.inbox;
  const realDir = await fs.realpath(inbox.dir);
  const auth = options.token === undefined ? undefined : new TokenCheck(options.token);
  const loopbackOnly = isLoopback(hostname);

  const messages: StoredMessage[] = await inbox.recentMessages(history);
  const clients = new Set<ServerResponse>();

  const broadcast = (event: string, data: unknown) => {
    const frame = `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
    for (const res of clients) write(res, frame);
  };
  const write = (res: ServerResponse, frame: string) => {
    if ((res.writableLength ?? 0) > MAX_SSE_BACKLOG) {
      clients.delete(res);
      res.destroy();
      return;
    }
    res.write(frame);
  };

  let lastCount = 0;
  let ticks = 0;
  const pushConnections = () => {
    const list = source.connections();
    if (list.length > 0 || lastCount > 0) broadcast("connections", list);
    lastCount = list.length;
  };
  const ticker = setInterval(() => {
    if (clients.size === 0) return;
    pushConnections();
    if (++ticks % KEEPALIVE_TICKS === 0) { for (const res of clients) write(res, ": keepalive\n\n"); }
  }, TICK_MS);
  (ticker as { unref?: () => void }).unref?.();

  // A session leaves the table just after its disconnect event: look once it has.
  const soon = () => setTimeout(() => clients.size > 0 && pushConnections(), 0);
  const unsubscribe = [
    source.on("connection", soon),
    source.on("disconnect", soon),
    source.on("file", ({ receipt }) => {
      if (!receipt.duplicate) broadcast("file", entryOf(receipt));
    }),
    source.on("message", ({ connection, text, receivedAt }) => {
      messages.push({ receivedAt, sender: connection.peer, text });
      if (messages.length > history) messages.splice(0, messages.length - history);
      broadcast("message", messages[messages.length - 1]);
    }),
  ];

  const recentFiles = (): FileEntry[] => {
    const all = inbox.receipts();
    const seen = new Set<string>();
    const out: FileEntry[] = [];
    for (let i = all.length - 1; i >= 0 && out.length < history; i--) {
      const r = all[i];
      if (seen.has(r.name)) continue; // an older receipt for a name that was overwritten
      seen.add(r.name);
      out.push(entryOf(r));
    }
    return out;
  };

  const routes: Record<string, (req: IncomingMessage, res: ServerResponse) => void | Promise<void>> = {
    "/": (_req, res) => text(res, 200, INDEX_HTML, "text/html; charset=utf-8"),
    "/index.html": (_req, res) => text(res, 200, INDEX_HTML, "text/html; charset=utf-8"),
    "/app.js": (_req, res) => text(res, 200, APP_JS, "text/javascript; charset=utf-8"),
    "/app.css": (_req, res) => text(res, 200, APP_CSS, "text/css; charset=utf-8"),
    "/favicon.ico": (_req, res) => {
      res.writeHead(204).end();
    },
    "/api/connections": (_req, res) => json(res, source.connections()),
    "/api/files": (_req, res) => json(res, { files: recentFiles() }),
    "/api/messages": (_req, res) => json(res, { messages: messages.slice().reverse() }),
    "/events": (req, res) => {
      if (clients.size >= maxClients) {
        return text(res, 503, `Too many live dashboards open (limit ${maxClients})\n`);
      }
      res.writeHead(200, {
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",
      });
      if (req.method === "HEAD") return void res.end();
      clients.add(res);
      const snapshot = {
        inbox: path.basename(inbox.dir),
        history,
        connections: source.connections(),
        files: recentFiles(),
        messages,
      };
      write(res, `retry: 2000\nevent: snapshot\ndata: ${JSON.stringify(snapshot)}\n\n`);
      const drop = () => clients.delete(res);
      req.on("close", drop);
      res.on("close", drop);
      res.on("error", drop);
    },
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) res.setHeader(k, v);
    const raw = req.url ?? "/";
    if (!raw.startsWith("/")) return text(res, 400, "Bad request target\n");
    if (loopbackOnly && !hostIsLoopback(req.headers.host)) {
      // A page elsewhere that rebinds its DNS name to 127.0.0.1 must not read the dashboard.
      return text(res, 403, "Forbidden: this dashboard answers only to localhost names\n");
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.setHeader("Allow", "GET, HEAD");
      return text(res, 405, "Method not allowed\n");
    }
    const q = raw.indexOf("?");
    const pathname = q === -1 ? raw : raw.slice(0, q);
    const query = new URLSearchParams(q === -1 ? "" : raw.slice(q + 1));
    if (auth) {
      const given = query.get("token");
      if (given !== null) {
        if (!auth.matches(given)) return unauthorized(res);
        query.delete("token");
        const rest = query.toString();
        res.setHeader("Set-Cookie", `${COOKIE}=${auth.cookie}; HttpOnly; SameSite=Strict; Path=/`);
        // Collapse leading slashes: "//evil.example" would be an off-site redirect.
        res.setHeader("Location", pathname.replace(/^\/+/, "/") + (rest ? "?" + rest : ""));
        return text(res, 303, "Signed in\n");
      }
      if (!auth.allows(req)) return unauthorized(res);
    }
    const route = routes[pathname];
    if (route) return await route(req, res);
    if (pathname.startsWith("/files/")) return await serveFile(req, res, pathname.slice("/files/".length));
    return text(res, 404, "Not found\n");
  };

  const serveFile = async (req: IncomingMessage, res: ServerResponse, encoded: string) => {
    let name: string;
    try {
      name = decodeURIComponent(encoded);
    } catch {
      return text(res, 400, "Bad file name encoding\n");
    }
    // Exactly a stored name with a receipt: "..", absolute paths and .ferry/ never have one.
    const receipt = inbox.receipt(name);
    if (!receipt || name.split("/")[0] === ".ferry") return text(res, 404, "Not found\n");
    const fh = await openInside(inbox.dir, realDir, name);
    if (!fh) return text(res, 404, "Not found\n");
    try {
      const st = await fh.stat();
      const etag = `"${receipt.sha256.slice(0, 32)}-${st.size}-${Math.floor(st.mtimeMs)}"`;
      const image = receipt.image;
      const base = name.slice(name.lastIndexOf("/") + 1);
      res.setHeader("ETag", etag);
      res.setHeader("Cache-Control", "private, no-cache");
      res.setHeader(
        "Content-Type",
        image && image.format in IMAGE_MIME
          ? IMAGE_MIME[image.format as ImageFormat]
          : "application/octet-stream",
      );
      res.setHeader("Content-Disposition", contentDisposition(image ? "inline" : "attachment", base));
      if (req.headers["if-none-match"] === etag) return void res.writeHead(304).end();
      res.setHeader("Content-Length", String(st.size));
      res.writeHead(200);
      if (req.method === "HEAD") return void res.end();
      await streamFile(fh, st.size, res);
    } finally {
      await fh.close().catch(() => {});
    }
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((e) => {
      if (!res.headersSent) text(res, 500, `Internal error: ${(e as Error)?.message ?? e}\n`);
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, hostname, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const shownHost = address.address.includes(":") ? `[${address.address}]` : address.address;
  let closed: Promise<void> | undefined;
  return {
    hostname: address.address,
    port: address.port,
    url: `http://${shownHost}:${address.port}/`,
    close() {
      closed ??= (async () => {
        clearInterval(ticker);
        for (const off of unsubscribe) off();
        for (const res of clients) res.end();
        clients.clear();
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          (server as { closeAllConnections?: () => void }).closeAllConnections?.();
        });
      })();
      return closed;
    },
  };
}

/** The receipt as the page needs it. */
export function entryOf(r: Receipt): FileEntry {
  const entry: FileEntry = {
    name: r.name,
    size: r.size,
    sha256: r.sha256,
    receivedAt: r.receivedAt,
    mtimeMs: r.mtimeMs,
    sender: r.sender,
    url: "/files/" + r.name.split("/").map(encodeURIComponent).join("/"),
  };
  if (r.image) entry.image = r.image;
  return entry;
}

const SECURITY_HEADERS: Record<string, string> = {
  "Content-Security-Policy": CSP,
  "X-Content-Type-Options": "nosniff",
  "Referrer-Policy": "no-referrer",
  "X-Frame-Options": "DENY",
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Resource-Policy": "same-origin",
};

function text(res: ServerResponse, status: number, body: string, type = "text/plain; charset=utf-8"): void {
  const bytes = new TextEncoder().encode(body);
  res.writeHead(status, {
    "Content-Type": type,
    "Content-Length": String(bytes.length),
    "Cache-Control": "no-store",
  });
  res.end(res.req?.method === "HEAD" ? undefined : bytes);
}

function json(res: ServerResponse, value: unknown): void {
  text(res, 200, JSON.stringify(value), "application/json; charset=utf-8");
}

function unauthorized(res: ServerResponse): void {
  res.setHeader("WWW-Authenticate", 'Bearer realm="ferry"');
  text(res, 401, "Unauthorized: open the dashboard with ?token=TOKEN or send Authorization: Bearer TOKEN\n");
}

/** `inline`/`attachment` with an ASCII fallback name and the exact UTF-8 name (RFC 6266, RFC 8187). */
function contentDisposition(kind: "inline" | "attachment", name: string): string {
  const fallback = name.replace(/[^A-Za-z0-9._ ()-]/g, "_");
  const exact = encodeURIComponent(name).replace(
    /['()*]/g,
    (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase(),
  );
  return `${kind}; filename="${fallback}"; filename*=UTF-8''${exact}`;
}

/**
 * Opens `rel` under the inbox for reading, or returns undefined: every
 * parent must be a real directory (no symlinks), the file itself is opened
 * with O_NOFOLLOW, and what was opened must be what resolves inside the inbox.
 */
async function openInside(dir: string, realDir: string, rel: string): Promise<fs.FileHandle | undefined> {
  const parts = rel.split("/");
  if (parts.some((p) => p === "" || p === "." || p === "..")) return undefined;
  let cur = dir;
  for (const part of parts.slice(0, -1)) {
    cur = path.join(cur, part);
    const st = await fs.lstat(cur).catch(() => undefined);
    if (!st || st.isSymbolicLink() || !st.isDirectory()) return undefined;
  }
  const full = path.join(dir, ...parts);
  const noFollow = fsConstants.O_NOFOLLOW ?? 0;
  let fh: fs.FileHandle;
  try {
    if (noFollow === 0 && (await fs.lstat(full)).isSymbolicLink()) return undefined;
    fh = await fs.open(full, fsConstants.O_RDONLY | noFollow);
  } catch {
    return undefined; // ELOOP for a symlink, ENOENT, EACCES…
  }
  try {
    const [opened, real] = await Promise.all([fh.stat(), fs.realpath(full)]);
    const there = await fs.stat(real);
    const inside = real.startsWith(realDir + path.sep);
    if (inside && opened.isFile() && opened.ino === there.ino && opened.dev === there.dev) return fh;
  } catch {
    // fall through: refuse
  }
  await fh.close().catch(() => {});
  return undefined;
}

async function streamFile(fh: fs.FileHandle, size: number, res: ServerResponse): Promise<void> {
  let pos = 0;
  while (pos < size && !res.destroyed) {
    const chunk = new Uint8Array(Math.min(FILE_CHUNK, size - pos));
    const { bytesRead } = await fh.read(chunk, 0, chunk.length, pos);
    if (bytesRead === 0) break; // the file shrank: the short body tells the client
    pos += bytesRead;
    if (!res.write(chunk.subarray(0, bytesRead))) {
      await new Promise<void>((resolve) => {
        const done = () => {
          res.off("drain", done);
          res.off("close", done);
          resolve();
        };
        res.once("drain", done);
        res.once("close", done);
      });
    }
  }
  if (pos < size) res.destroy();
  else res.end();
}

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/** True when a Host header names a loopback address or localhost. */
function hostIsLoopback(header: string | undefined): boolean {
  if (!header) return false;
  const host = header.startsWith("[") ? header.slice(1, header.indexOf("]")) : header.replace(/:\d+$/, "");
  return isLoopback(host.toLowerCase());
}

/** Constant-time token checks, for the header, the query and the cookie. */
class TokenCheck {
  readonly #digest: Uint8Array;
  /** The cookie value: derived from the token, so the cookie never holds the token itself. */
  readonly cookie: string;

  constructor(token: string) {
    this.#digest = sha256(token);
    this.cookie = createHmac("sha256", token).update("ferry-dashboard-cookie-v1").digest("hex");
  }

  matches(candidate: string): boolean {
    return timingSafeEqual(sha256(candidate), this.#digest);
  }

  allows(req: IncomingMessage): boolean {
    const header = req.headers.authorization;
    if (header?.startsWith("Bearer ") && this.matches(header.slice(7).trim())) return true;
    for (const part of (req.headers.cookie ?? "").split(";")) {
      const [k, v] = part.trim().split("=", 2);
      if (k === COOKIE && v !== undefined && timingSafeEqual(sha256(v), sha256(this.cookie))) return true;
    }
    return false;
  }
}

function sha256(s: string): Uint8Array {
  return new Uint8Array(createHash("sha256").update(s).digest());
}
