/**
 * The receiving server: accepts many connections at once and stores what
 * they send in an {@linkcode Inbox}.
 *
 * @module
 */
import { FerryError } from "../errors.ts";
import { Emitter } from "../events.ts";
import { DEFAULT_MAX_FRAME_SIZE, MAX_FRAME_SIZE_CEILING } from "../framing/frame.ts";
import { defaultRuntime } from "../runtime/select.ts";
import type { Listener, Runtime, TlsServerOptions } from "../runtime/transport.ts";
import {
  type CollisionPolicy,
  DEFAULT_FLUSH_AHEAD_BYTES,
  DEFAULT_SYNC_EVERY_BYTES,
  Inbox,
  type Receipt,
  type SyncMode,
} from "../store/inbox.ts";
import { AuthGate } from "./auth.ts";
import { type DashboardHandle, type DashboardOptions, startDashboard } from "../http/dashboard.ts";
import { DEFAULT_MAX_PIXELS, inspectFile } from "../images/inspect.ts";
import { type ConnectionInfo, Session } from "./session.ts";

/** Default TCP port. */
export const DEFAULT_PORT = 9000;
/** Default listen address: loopback only, so nothing is exposed by accident. */
export const DEFAULT_HOST = "127.0.0.1";

/** Options for {@linkcode serve}. Every limit has a default. */
export interface ServerOptions {
  /** The inbox directory; created if missing. */
  dir: string;
  /** Listen address. Default `127.0.0.1`. */
  hostname?: string;
  /** Listen port; 0 picks a free one. Default 9000. */
  port?: number;
  /** Largest file accepted, in bytes; 0 = no limit. Default 0. */
  maxFileSize?: number;
  /** Largest frame payload accepted. Default 1 MiB. */
  maxFrameSize?: number;
  /** Connections served at once; more get SERVER_BUSY. Default 512. */
  maxConnections?: number;
  /** Connections from one IP address at once. Default 256. */
  maxConnectionsPerIp?: number;
  /** Time allowed for HELLO (and AUTH). Default 10 s. */
  handshakeTimeoutMs?: number;
  /** Time without file or message activity before IDLE_TIMEOUT. Default 5 min. */
  idleTimeoutMs?: number;
  /** Free bytes that must remain after a file is stored. Default 64 MiB. */
  minFreeBytes?: number;
  /** What to do when the name exists. Default "rename" (keep both). */
  onCollision?: CollisionPolicy;
  /** Age after which partial files are deleted. Default 24 h. */
  partialTtlMs?: number;
  /** Largest text message in bytes. Default 64 KiB. */
  maxMessageBytes?: number;
  /** Files open at once on one connection (each holds a file handle); more get SERVER_BUSY for that file. Default 64. */
  maxOpenFiles?: number;
  /** Heartbeat PING interval. Default 5 s. */
  heartbeatIntervalMs?: number;
  /** Intervals of silence before a peer is declared dead. Default 3. */
  heartbeatMisses?: number;
  /** Shared token; when set, clients must authenticate. */
  token?: string;
  /** Failed auth attempts per IP per minute before RATE_LIMITED. Default 5. */
  maxAuthFailuresPerMinute?: number;
  /** TLS certificate and key (PEM). */
  tls?: TlsServerOptions;
  /** Time in-flight transfers get to finish on close(). Default 10 s. */
  graceMs?: number;
  /**
   * Checkpoint (fsync) a partial every this many bytes, in the background: at most twice this much of
   * an upload is ever not durable. Default 32 MiB ({@linkcode DEFAULT_SYNC_EVERY_BYTES}).
   */
  syncEveryBytes?: number;
  /**
   * Start a background fdatasync of a partial every this many bytes, which the data path does not wait
   * for, so its data reaches the disk while the rest arrives; 0 = off. Default 1 MiB on Linux, off
   * elsewhere ({@linkcode DEFAULT_FLUSH_AHEAD_BYTES}).
   */
  flushAheadBytes?: number;
  /**
   * How finished files are made durable. Default `"batch"`: files finishing while another is being
   * synced share one `syncfs(2)` where that is as safe as an fsync per file (Linux 5.8+, ext4, XFS or
   * btrfs, and on Deno `--allow-ffi`), else an fsync per file;
   * `"file"`: an fsync per file, for an inbox on a filesystem that other programs write much to.
   */
  syncMode?: SyncMode;
  /**
   * Keep received data in the page cache. Default false: once a stretch of a large upload is on disk it
   * is dropped from the cache, where the runtime can (Linux; Deno with `--allow-ffi`); see
   * `InboxOptions.keepPageCache`.
   */
  keepPageCache?: boolean;
  /** The socket runtime; defaults to the faster path measured for this runtime (src/runtime/select.ts). */
  runtime?: Runtime;
  /**
   * Do not announce DIGEST_AT_END: senders then hash each file before sending it and declare the
   * SHA-256 in its FILE, so a file the inbox already has is recognised before any byte moves (a read
   * pass per file for the sender). Default false: large files may be streamed with their hash at the end.
   */
  hashFirst?: boolean;
  /** Refuse files whose content is not an image (`NOT_AN_IMAGE`, or `TYPE_MISMATCH` if named as one). Default false. */
  imagesOnly?: boolean;
  /** Refuse images that declare more pixels, from their header, before the body is stored. Default 100 000 000; 0 = no limit. */
  maxPixels?: number;
  /** Also serve the live web dashboard over HTTP (see src/http/dashboard.ts). */
  http?: DashboardOptions;
}

/** Events a running server reports. The CLI turns them into log lines. */
export interface ServerEvents extends Record<string, unknown> {
  connection: ConnectionInfo;
  disconnect: ConnectionInfo & { reason?: FerryError | Error };
  file: { connection: ConnectionInfo; receipt: Receipt };
  fileError: { connection: ConnectionInfo; name: string; error: FerryError };
  message: { connection: ConnectionInfo; id: number; text: string; receivedAt: string };
  /** A syncfs failed: every file gets its own fsync from now on (see `ServerOptions.syncMode`). */
  syncFallback: Record<string, never>;
}

/** A running server, returned by {@linkcode serve}. */
export interface ServerHandle {
  /** The bound address; `port` is real even when 0 was asked for. */
  readonly hostname: string;
  readonly port: number;
  readonly inbox: Inbox;
  /** The web dashboard, when `http` was given. */
  readonly http?: DashboardHandle;
  /** Live connection table. */
  connections(): ConnectionInfo[];
  /** Subscribe to events; returns an unsubscribe function. */
  on<K extends keyof ServerEvents>(type: K, listener: (value: ServerEvents[K]) => void): () => void;
  /**
   * Graceful shutdown: stop accepting, let in-flight transfers finish within
   * the grace period, then close the rest (their partials stay resumable).
   */
  close(options?: { graceMs?: number }): Promise<void>;
}

/** Options after defaults are applied. */
export type ResolvedServerOptions = Required<Omit<ServerOptions, "token" | "tls" | "runtime" | "http">> & {
  token?: string;
  tls?: TlsServerOptions;
};

function resolve(options: ServerOptions): ResolvedServerOptions {
  const o: ResolvedServerOptions = {
    dir: options.dir,
    hostname: options.hostname ?? DEFAULT_HOST,
    port: options.port ?? DEFAULT_PORT,
    maxFileSize: options.maxFileSize ?? 0,
    maxFrameSize: options.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE,
    maxConnections: options.maxConnections ?? 512,
    maxConnectionsPerIp: options.maxConnectionsPerIp ?? 256,
    handshakeTimeoutMs: options.handshakeTimeoutMs ?? 10_000,
    idleTimeoutMs: options.idleTimeoutMs ?? 5 * 60_000,
    minFreeBytes: options.minFreeBytes ?? 64 * 1024 * 1024,
    onCollision: options.onCollision ?? "rename",
    partialTtlMs: options.partialTtlMs ?? 24 * 3600_000,
    maxMessageBytes: options.maxMessageBytes ?? 64 * 1024,
    maxOpenFiles: options.maxOpenFiles ?? 64,
    heartbeatIntervalMs: options.heartbeatIntervalMs ?? 5_000,
    heartbeatMisses: options.heartbeatMisses ?? 3,
    token: options.token,
    maxAuthFailuresPerMinute: options.maxAuthFailuresPerMinute ?? 5,
    tls: options.tls,
    graceMs: options.graceMs ?? 10_000,
    syncEveryBytes: options.syncEveryBytes ?? DEFAULT_SYNC_EVERY_BYTES,
    flushAheadBytes: options.flushAheadBytes ?? DEFAULT_FLUSH_AHEAD_BYTES,
    syncMode: options.syncMode ?? "batch",
    keepPageCache: options.keepPageCache ?? false,
    imagesOnly: options.imagesOnly ?? false,
    hashFirst: options.hashFirst ?? false,
    maxPixels: options.maxPixels ?? DEFAULT_MAX_PIXELS,
  };
  if (typeof o.dir !== "string" || o.dir === "") throw new TypeError("Cannot serve: dir is required");
  if (o.syncMode !== "batch" && o.syncMode !== "file") {
    throw new TypeError(`Cannot serve: syncMode ${String(o.syncMode)} is not "batch" or "file"`);
  }
  if (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535) {
    throw new RangeError(`Cannot serve: port ${o.port} is not 0..65535`);
  }
  if (!Number.isInteger(o.maxFrameSize) || o.maxFrameSize < 1024 || o.maxFrameSize > MAX_FRAME_SIZE_CEILING) {
    throw new RangeError(
      `Cannot serve: maxFrameSize ${o.maxFrameSize} is not in 1024..${MAX_FRAME_SIZE_CEILING}`,
    );
  }
  for (
    const key of [
      "maxConnections",
      "maxConnectionsPerIp",
      "handshakeTimeoutMs",
      "idleTimeoutMs",
      "maxMessageBytes",
      "maxOpenFiles",
      "maxAuthFailuresPerMinute",
      "heartbeatIntervalMs",
      "heartbeatMisses",
      "syncEveryBytes",
    ] as const
  ) {
    if (!(Number.isFinite(o[key]) && o[key] > 0)) {
      throw new RangeError(`Cannot serve: ${key} must be positive`);
    }
  }
  for (
    const key of [
      "maxFileSize",
      "minFreeBytes",
      "partialTtlMs",
      "graceMs",
      "maxPixels",
      "flushAheadBytes",
    ] as const
  ) {
    if (!(Number.isFinite(o[key]) && o[key] >= 0)) {
      throw new RangeError(`Cannot serve: ${key} must not be negative`);
    }
  }
  return o;
}

/**
 * Starts a ferry server.
 *
 * @example Receive into ./inbox on an ephemeral port
 * ```ts
 * import { serve } from "../../mod.ts";
 * const server = await serve({ dir: "./inbox", port: 0 });
 * server.on("file", ({ receipt }) => console.log("stored", receipt.name));
 * console.log(`listening on ${server.hostname}:${server.port}`);
 * await server.close();
 * ```
 */
export async function serve(options: ServerOptions): Promise<ServerHandle> {
  const o = resolve(options);
  const runtime = options.runtime ?? defaultRuntime();
  const events = new Emitter<ServerEvents>();
  const inbox = await Inbox.open({
    dir: o.dir,
    onCollision: o.onCollision,
    partialTtlMs: o.partialTtlMs,
    minFreeBytes: o.minFreeBytes,
    maxFileSize: o.maxFileSize,
    // Full image check of the complete file, before it is placed; the session checks the head earlier.
    inspect: (tempPath, header) =>
      inspectFile(tempPath, header.name, { imagesOnly: o.imagesOnly, maxPixels: o.maxPixels }),
    syncEveryBytes: o.syncEveryBytes,
    flushAheadBytes: o.flushAheadBytes,
    syncMode: o.syncMode,
    keepPageCache: o.keepPageCache,
    onSyncFallback: () => events.emit("syncFallback", {}),
  });
  const sessions = new Set<Session>();
  const perIp = new Map<string, number>();
  const auth = o.token === undefined ? undefined : new AuthGate(o.token, o.maxAuthFailuresPerMinute);
  let nextId = 1;
  let draining = false;

  const listener: Listener = await runtime.listen(
    { hostname: o.hostname, port: o.port, tls: o.tls, handshakeTimeoutMs: o.handshakeTimeoutMs },
    (conn) => {
      const ip = conn.remoteAddress;
      const session = new Session(nextId++, conn, { options: o, inbox, events, auth });
      let refusal: FerryError | undefined;
      if (draining) refusal = new FerryError("SHUTTING_DOWN", "Server is shutting down");
      else if (sessions.size >= o.maxConnections) {
        refusal = new FerryError(
          "SERVER_BUSY",
          `Server is busy: ${o.maxConnections} connections already open`,
        );
      } else if ((perIp.get(ip) ?? 0) >= o.maxConnectionsPerIp) {
        refusal = new FerryError(
          "SERVER_BUSY",
          `Server is busy: ${o.maxConnectionsPerIp} connections already open from ${ip}`,
        );
      }
      if (refusal) {
        session.refuse(refusal);
        return;
      }
      sessions.add(session);
      perIp.set(ip, (perIp.get(ip) ?? 0) + 1);
      session.run().finally(() => {
        sessions.delete(session);
        const left = (perIp.get(ip) ?? 1) - 1;
        if (left > 0) perIp.set(ip, left);
        else perIp.delete(ip);
      });
    },
  );

  // Stale partials are swept on open; keep sweeping while the server runs (started only once
  // listening succeeded, so a failed start leaves no timer behind).
  const sweepTimer = setInterval(() => {
    inbox.sweep().catch(() => {});
  }, Math.max(60_000, Math.min(o.partialTtlMs, 3600_000)));
  (sweepTimer as { unref?: () => void }).unref?.();

  let dashboard: DashboardHandle | undefined;
  let closing: Promise<void> | undefined;
  const handle: ServerHandle = {
    hostname: listener.hostname,
    port: listener.port,
    inbox,
    get http() {
      return dashboard;
    },
    connections: () => [...sessions].map((s) => s.info()),
    on: (type, fn) => events.on(type, fn),
    close(closeOptions) {
      // A second call waits for the same shutdown instead of returning early.
      closing ??= shutdown(closeOptions);
      return closing;
    },
  };

  async function shutdown(closeOptions?: { graceMs?: number }): Promise<void> {
    draining = true;
    clearInterval(sweepTimer);
    await dashboard?.close();
    await listener.close();
    const graceMs = closeOptions?.graceMs ?? o.graceMs;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const graceOver = new Promise<void>((r) => timer = setTimeout(r, graceMs));
    await Promise.race([Promise.all([...sessions].map((s) => s.drained())), graceOver]);
    clearTimeout(timer);
    await Promise.all([...sessions].map((s) => s.shutdown()));
    await inbox.close();
  }
  if (options.http) {
    try {
      dashboard = await startDashboard(handle, options.http);
    } catch (e) {
      await handle.close({ graceMs: 0 });
      throw e;
    }
  }
  return handle;
}
