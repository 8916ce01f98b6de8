/**
 * `ferry serve` / `server.ts`: the receiving server's command line.
 *
 * @module
 */
import process from "node:process";
import { setImmediate } from "node:timers";
import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { FerryError } from "../errors.ts";
import { escapeForDisplay } from "../names/names.ts";
import { DEFAULT_HOST, DEFAULT_PORT, serve, type ServerOptions } from "../server/server.ts";
import { VERSION } from "../version.ts";
import { err, ExitCode, loadToken, out, readEnv } from "./common.ts";
import { formatBytes, parseCount, parseDuration, parseSize } from "./units.ts";

export const SERVE_HELP = `ferry server ${VERSION}: receive files, folders, images and messages over TCP.

Usage:
  deno run --allow-net --allow-read=./inbox --allow-write=./inbox server.ts --dir ./inbox [options]
  bun server.ts --dir ./inbox [options]
  ferry serve --dir ./inbox [options]

Options:
  --dir DIR                   Inbox folder, created if missing (default ./inbox)
  --host ADDR                 Listen address (default ${DEFAULT_HOST}; 0.0.0.0 or :: for all)
  --port N                    TCP port, 0 for any free one (default ${DEFAULT_PORT})
  --on-collision MODE         rename (keep both: "photo (1).jpg"), overwrite or reject (default rename)
  --max-file-size SIZE        Largest file accepted, 0 = no limit (default 0)
  --max-frame-size SIZE       Largest frame payload accepted (default 1M)
  --max-connections N         Connections served at once (default 512)
  --max-connections-per-ip N  Connections from one address at once (default 256)
  --handshake-timeout DUR     Time allowed for the handshake and auth (default 10s)
  --idle-timeout DUR          Close connections idle this long (default 5m)
  --min-free SIZE             Free disk space that must remain after a file (default 64M)
  --partial-ttl DUR           Delete unfinished partial files after this long (default 24h)
  --sync-every SIZE           fsync a partial file every SIZE bytes, in the background; a crash
                              loses at most 2 x SIZE of an upload, which the sender resends (default 32M)
  --flush-ahead SIZE          Start writing a partial file to disk every SIZE bytes, in the background,
                              so storing it has little left to write; 0 = off (default 1M on Linux,
                              0 elsewhere)
  --sync-mode MODE            batch: files finishing together share one syncfs(2), one disk cache flush
                              (Linux 5.8+ on ext4, XFS or btrfs; Deno needs --allow-ffi; elsewhere it
                              falls back to file); file: an fsync per file, for an inbox on a disk
                              other programs write much to (default batch)
  --keep-page-cache           Keep received data in the OS page cache. By default, once a stretch of
                              a large upload is on disk it is dropped from the cache (posix_fadvise;
                              Linux, and Deno needs --allow-ffi), so a big upload does not evict
                              other programs' cached files
  --max-message-size SIZE     Largest text message (default 64K)
  --max-open-files N          Files in flight at once on one connection (default 64)
  --heartbeat-interval DUR    PING interval (default 5s)
  --heartbeat-misses N        Silent intervals before a peer is dead (default 3)
  --grace DUR                 On SIGINT/SIGTERM, time for transfers to finish (default 10s)
  --token-file FILE           Require clients to prove this shared token (or set FERRY_TOKEN)
  --max-auth-failures N       Failed auth attempts per address per minute before RATE_LIMITED (default 5)
  --tls-cert FILE --tls-key FILE   Serve TLS with this certificate and key (PEM)
  --hash-first                Do not let senders stream a file before hashing it (no DIGEST_AT_END):
                              a file already stored is then skipped before any byte moves, at the
                              cost of a read pass per file on the sender
  --images-only               Accept only images (JPEG, PNG, GIF, WebP, AVIF, HEIC), checked by content
  --max-pixels N              Refuse images declaring more pixels, before their body is stored;
                              0 = no limit (default 100000000)
  --http PORT                 Also serve the live web dashboard on this port (0 for any free one)
  --http-host ADDR            Dashboard listen address (default 127.0.0.1)
  --http-token-file FILE      Require this token for the dashboard (or set FERRY_HTTP_TOKEN); open
                              http://HOST:PORT/?token=TOKEN once, or send Authorization: Bearer TOKEN
  --http-history N            Files and messages the dashboard lists (default 200)
  --http-max-clients N        Dashboards open at once (default 32)
  --log-json                  One JSON object per log line
  -q, --quiet                 Log only errors
  -h, --help                  Show this help
  -V, --version               Show the version

SIZE takes K, M, G suffixes (powers of 1024); DUR takes ms, s, m, h, d (a bare number is seconds).

Examples:
  deno run --allow-net --allow-read=./inbox --allow-write=./inbox server.ts --dir ./inbox
  bun server.ts --dir ~/Pictures/inbox --host 0.0.0.0 --port 9000 --on-collision reject
  FERRY_TOKEN=s3cret bun server.ts --dir ./inbox --max-file-size 2G
`;

/** Parses server flags into options. Throws `TypeError` on bad usage. */
export async function parseServeArgs(
  args: string[],
): Promise<{ options: ServerOptions; logJson: boolean; quiet: boolean; help: boolean; version: boolean }> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      dir: { type: "string", default: "./inbox" },
      host: { type: "string" },
      port: { type: "string" },
      "on-collision": { type: "string" },
      "max-file-size": { type: "string" },
      "max-frame-size": { type: "string" },
      "max-connections": { type: "string" },
      "max-connections-per-ip": { type: "string" },
      "handshake-timeout": { type: "string" },
      "idle-timeout": { type: "string" },
      "min-free": { type: "string" },
      "partial-ttl": { type: "string" },
      "sync-every": { type: "string" },
      "flush-ahead": { type: "string" },
      "sync-mode": { type: "string" },
      "keep-page-cache": { type: "boolean" },
      "max-message-size": { type: "string" },
      "max-open-files": { type: "string" },
      "heartbeat-interval": { type: "string" },
      "heartbeat-misses": { type: "string" },
      grace: { type: "string" },
      "token-file": { type: "string" },
      "images-only": { type: "boolean", default: false },
      "hash-first": { type: "boolean", default: false },
      "max-pixels": { type: "string" },
      http: { type: "string" },
      "http-host": { type: "string" },
      "http-token-file": { type: "string" },
      "http-history": { type: "string" },
      "http-max-clients": { type: "string" },
      "max-auth-failures": { type: "string" },
      "tls-cert": { type: "string" },
      "tls-key": { type: "string" },
      "log-json": { type: "boolean", default: false },
      quiet: { type: "boolean", short: "q", default: false },
      help: { type: "boolean", short: "h", default: false },
      version: { type: "boolean", short: "V", default: false },
    },
  });
  if (positionals.length > 0) throw new TypeError(`Unexpected argument: ${positionals[0]}`);
  const o: ServerOptions = { dir: values.dir! };
  if (values.host !== undefined) o.hostname = values.host;
  if (values.port !== undefined) {
    o.port = parseCount(values.port, "--port");
    if (o.port > 65535) throw new TypeError(`Invalid value for --port: ${values.port} is above 65535`);
  }
  const collision = values["on-collision"];
  if (collision !== undefined) {
    if (collision !== "rename" && collision !== "overwrite" && collision !== "reject") {
      throw new TypeError(
        `Invalid value for --on-collision: "${collision}" (use rename, overwrite or reject)`,
      );
    }
    o.onCollision = collision;
  }
  const size = (flag: string) => values[flag as keyof typeof values] as string | undefined;
  if (size("max-file-size")) o.maxFileSize = parseSize(size("max-file-size")!, "--max-file-size");
  if (size("max-frame-size")) o.maxFrameSize = parseSize(size("max-frame-size")!, "--max-frame-size");
  if (size("min-free")) o.minFreeBytes = parseSize(size("min-free")!, "--min-free");
  if (size("max-message-size")) {
    o.maxMessageBytes = parseSize(size("max-message-size")!, "--max-message-size");
  }
  if (size("max-connections")) {
    o.maxConnections = parseCount(size("max-connections")!, "--max-connections", 1);
  }
  if (size("max-open-files")) o.maxOpenFiles = parseCount(size("max-open-files")!, "--max-open-files", 1);
  if (size("max-connections-per-ip")) {
    o.maxConnectionsPerIp = parseCount(size("max-connections-per-ip")!, "--max-connections-per-ip", 1);
  }
  if (size("heartbeat-misses")) {
    o.heartbeatMisses = parseCount(size("heartbeat-misses")!, "--heartbeat-misses", 1);
  }
  if (size("handshake-timeout")) {
    o.handshakeTimeoutMs = parseDuration(size("handshake-timeout")!, "--handshake-timeout");
  }
  if (size("idle-timeout")) o.idleTimeoutMs = parseDuration(size("idle-timeout")!, "--idle-timeout");
  if (size("partial-ttl")) o.partialTtlMs = parseDuration(size("partial-ttl")!, "--partial-ttl");
  if (size("sync-every")) {
    o.syncEveryBytes = parseSize(size("sync-every")!, "--sync-every");
    if (o.syncEveryBytes < 1) throw new TypeError("Invalid value for --sync-every: must be at least 1 byte");
  }
  if (size("flush-ahead")) o.flushAheadBytes = parseSize(size("flush-ahead")!, "--flush-ahead");
  const syncMode = values["sync-mode"];
  if (syncMode !== undefined) {
    if (syncMode !== "batch" && syncMode !== "file") {
      throw new TypeError(`Invalid value for --sync-mode: "${syncMode}" (use batch or file)`);
    }
    o.syncMode = syncMode;
  }
  if (values["keep-page-cache"]) o.keepPageCache = true;
  if (size("heartbeat-interval")) {
    o.heartbeatIntervalMs = parseDuration(size("heartbeat-interval")!, "--heartbeat-interval");
  }
  if (size("grace")) o.graceMs = parseDuration(size("grace")!, "--grace");
  if ((values["tls-cert"] === undefined) !== (values["tls-key"] === undefined)) {
    throw new TypeError("--tls-cert and --tls-key go together");
  }
  if (values["tls-cert"] !== undefined) {
    o.tls = {
      cert: await readFile(values["tls-cert"], "utf8"),
      key: await readFile(values["tls-key"]!, "utf8"),
    };
  }
  if (size("max-auth-failures")) {
    o.maxAuthFailuresPerMinute = parseCount(size("max-auth-failures")!, "--max-auth-failures", 1);
  }
  o.token = await loadToken(values["token-file"]);
  if (values["images-only"]) o.imagesOnly = true;
  if (values["hash-first"]) o.hashFirst = true;
  if (size("max-pixels")) o.maxPixels = parseCount(size("max-pixels")!, "--max-pixels");
  const httpOnly = ["http-host", "http-token-file", "http-history", "http-max-clients"].filter((f) =>
    size(f)
  );
  if (values.http === undefined && httpOnly.length > 0) {
    throw new TypeError(`--${httpOnly[0]} needs --http PORT`);
  }
  if (values.http !== undefined) {
    const port = parseCount(values.http, "--http");
    if (port > 65535) throw new TypeError(`Invalid value for --http: ${values.http} is above 65535`);
    o.http = { port };
    if (size("http-host")) o.http.hostname = size("http-host");
    if (size("http-history")) o.http.history = parseCount(size("http-history")!, "--http-history", 1);
    if (size("http-max-clients")) {
      o.http.maxClients = parseCount(size("http-max-clients")!, "--http-max-clients", 1);
    }
    const tokenFile = size("http-token-file");
    if (tokenFile !== undefined) {
      const token = (await readFile(tokenFile, "utf8")).trim();
      if (token === "") throw new TypeError(`Token file ${tokenFile} is empty`);
      o.http.token = token;
    } else {
      const env = readEnv("FERRY_HTTP_TOKEN");
      if (env) o.http.token = env;
    }
  }
  return {
    options: o,
    logJson: values["log-json"]!,
    quiet: values.quiet!,
    help: values.help!,
    version: values.version!,
  };
}

/** Runs the server CLI; resolves to the process exit code when the server stops. */
export async function serveMain(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = await parseServeArgs(args);
  } catch (e) {
    err(`ferry: ${(e as Error).message}\nRun with --help for usage.`);
    return ExitCode.USAGE;
  }
  if (parsed.help) {
    out(SERVE_HELP);
    return ExitCode.OK;
  }
  if (parsed.version) {
    out(`ferry ${VERSION}`);
    return ExitCode.OK;
  }
  const log = makeLogger(parsed.logJson, parsed.quiet);
  let server;
  try {
    server = await serve(parsed.options);
  } catch (e) {
    const code = e instanceof FerryError ? e.code : (e as { code?: string }).code ?? "INTERNAL";
    log(
      "error",
      { event: "error", code, message: (e as Error).message },
      `cannot start: ${(e as Error).message}`,
    );
    return code === "EADDRINUSE" || code === "EACCES" ? ExitCode.CONNECTION : ExitCode.INTERNAL;
  }
  const host = server.hostname.includes(":") ? `[${server.hostname}]` : server.hostname;
  // Signal handlers go in before "listening" is printed: whoever reads that line may signal at once,
  // and a signal that beats the handler kills the process without a graceful shutdown.
  const exited = new Promise<number>((resolve) => {
    let stopping = false;
    let firstAt = 0;
    const stop = (signal: string) => {
      if (stopping) {
        // Deno can deliver one signal to a listener several times in a burst: only a later one forces.
        if (performance.now() - firstAt < 500) return;
        log("warn", { event: "shutdown", signal, forced: true }, `${signal} again: exiting now`);
        resolve(130);
        return;
      }
      stopping = true;
      firstAt = performance.now();
      log("info", { event: "shutdown", signal }, `${signal}: finishing transfers in flight, then exiting`);
      server.close().then(() => {
        log("info", { event: "stopped" }, "stopped");
        resolve(ExitCode.OK);
      }, (e: Error) => {
        log(
          "error",
          { event: "error", code: "INTERNAL", message: e.message },
          `shutdown failed: ${e.message}`,
        );
        resolve(ExitCode.INTERNAL);
      });
    };
    process.on("SIGINT", () => stop("SIGINT"));
    process.on("SIGTERM", () => stop("SIGTERM"));
  });
  // Batch syncing asked for (the default) but not available: say so, and how to get it on Deno.
  const grouping = server.inbox.syncStats.grouping;
  const syncNote = grouping || parsed.options.syncMode === "file" || process.platform !== "linux"
    ? ""
    : `, an fsync per file (no safe syncfs: it needs Linux 5.8+, ext4, XFS or btrfs${
      typeof (globalThis as { Deno?: unknown }).Deno !== "undefined" ? ", and --allow-ffi on Deno" : ""
    })`;
  // Before "listening", so whoever waits for that line can already find the dashboard's port.
  if (server.http) {
    log(
      "info",
      {
        event: "http",
        host: server.http.hostname,
        port: server.http.port,
        url: server.http.url,
        auth: parsed.options.http?.token !== undefined,
      },
      `dashboard on ${server.http.url}${parsed.options.http?.token ? " (token required)" : ""}`,
    );
  }
  log(
    "info",
    {
      event: "listening",
      host: server.hostname,
      port: server.port,
      dir: parsed.options.dir,
      auth: parsed.options.token !== undefined,
      tls: parsed.options.tls !== undefined,
      sync: grouping ? "batch" : "file",
      pageCache: server.inbox.dropsPageCache ? "drop" : "keep",
      ...(server.http ? { http: server.http.url } : {}),
    },
    `listening on ${host}:${server.port}, inbox ${parsed.options.dir}${
      parsed.options.token ? ", token required" : ""
    }${parsed.options.tls ? ", TLS" : ""}${syncNote}`,
  );

  server.on(
    "connection",
    (c) => log("info", { event: "connect", conn: c.id, peer: c.peer }, `#${c.id} ${c.peer} connected`),
  );
  server.on("disconnect", (c) => {
    const reason = c.reason instanceof FerryError ? c.reason.code : c.reason?.message;
    log(
      "info",
      {
        event: "disconnect",
        conn: c.id,
        peer: c.peer,
        bytes: c.bytesReceived,
        files: c.filesReceived,
        reason,
      },
      `#${c.id} ${c.peer} disconnected: ${c.filesReceived} files, ${formatBytes(c.bytesReceived)}${
        reason ? ` (${reason})` : ""
      }`,
    );
  });
  server.on("file", ({ connection, receipt }) => {
    log(
      "info",
      { event: "file", conn: connection.id, peer: connection.peer, ...receipt },
      () =>
        `#${connection.id} ${receipt.duplicate ? "already have" : "stored"} "${
          escapeForDisplay(receipt.name)
        }" ${formatBytes(receipt.size)} sha256:${receipt.sha256.slice(0, 16)}…`,
    );
  });
  server.on("syncFallback", () => {
    log(
      "warn",
      { event: "sync_fallback" },
      "a syncfs failed (a disk write error?): every file gets its own fsync from now on",
    );
  });
  server.on("fileError", ({ connection, name, error }) => {
    log(
      "warn",
      {
        event: "file_error",
        conn: connection.id,
        peer: connection.peer,
        name,
        code: error.code,
        message: error.message,
      },
      `#${connection.id} refused${name ? ` "${escapeForDisplay(name)}"` : ""}: ${error.code}: ${
        escapeForDisplay(error.message)
      }`,
    );
  });
  server.on("message", ({ connection, text, receivedAt }) => {
    log(
      "info",
      { event: "message", conn: connection.id, peer: connection.peer, text, receivedAt },
      `#${connection.id} message: ${escapeForDisplay(text.length > 200 ? text.slice(0, 200) + "…" : text)}`,
    );
  });

  return await exited;
}

type Level = "info" | "warn" | "error";

/** One line per event: human-readable, or JSON with --log-json. Names are escaped by the callers. */
function makeLogger(json: boolean, quiet: boolean) {
  // A busy server logs a line per connection and per file: the lines of one turn of the event loop go
  // out in one write at its end (on Deno each write to stdout is a synchronous call, 45 ms per 2,000
  // files in bench (b)). Anything but routine info goes out at once, with what was waiting before it.
  let waiting: string[] = [];
  const flush = () => {
    if (waiting.length === 0) return;
    const lines = waiting.join("\n");
    waiting = [];
    out(lines);
  };
  process.on("exit", flush);
  return (level: Level, fields: Record<string, unknown>, text: string | (() => string)) => {
    if (quiet && level === "info" && fields.event !== "listening" && fields.event !== "http") return;
    const time = new Date().toISOString();
    waiting.push(
      json
        ? JSON.stringify({ time, level, ...fields })
        : `${time} ${level === "info" ? "" : level.toUpperCase() + " "}${
          typeof text === "function" ? text() : text
        }`,
    );
    if (level !== "info" || !ROUTINE_EVENTS.has(fields.event as string)) flush();
    else if (waiting.length === 1) setImmediate(flush);
  };
}

/** Events logged many times a second on a busy server, whose lines may wait for the end of the turn. */
const ROUTINE_EVENTS = new Set(["connect", "disconnect", "file", "message"]);
