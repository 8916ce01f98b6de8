/**
 * A small in-process TCP proxy for fault-injection tests: it listens on
 * 127.0.0.1:0 and forwards every accepted connection to a target, and can,
 * per connection or for all of them:
 *
 * - **cut** both sides once N client→server bytes were forwarded (the server
 *   gets exactly those N bytes, then EOF; the client's socket is destroyed),
 * - **reset** both sides with a TCP RST after N bytes (the server then gets
 *   at most N: a RST also drops what the kernel had not delivered yet),
 * - **stall**: stop forwarding in both directions without closing, so only a
 *   heartbeat can notice,
 * - **slice** every forwarded write into 1-byte pieces,
 * - **throttle** forwarding to a byte rate, so a transfer lasts long enough
 *   for heartbeats to flow.
 *
 * N may be a byte count or a point inside the client's frame stream
 * ({@linkcode FramePoint}), such as "2 bytes into the 3rd DATA frame's
 * header". It counts the bytes forwarded each way, per connection and in
 * total, so a test can tell how many bytes the sender wrote that never
 * reached the server.
 *
 * Only for tests: it talks to loopback and nothing else.
 *
 * @example Cut the first connection after 100 KiB, let the retry through
 * ```ts
 * import { FaultProxy } from "./fault_proxy.ts";
 * const proxy = await FaultProxy.start({ port: 9000 }, { plans: [{ cutAfter: 100 * 1024 }] });
 * // point the sender at proxy.port …
 * const first = await proxy.connection(0);
 * await first.closed;
 * console.log(first.up.forwarded, "bytes reached the server before the cut");
 * await proxy.close();
 * ```
 *
 * @module
 */
import * as net from "node:net";

/** A position in the client→server frame stream (frames are u32 length + u8 type + payload). */
export interface FramePoint {
  /** The frame type byte, e.g. 0x12 for DATA. */
  frameType: number;
  /** Which frame of that type, counting from 1. */
  nth: number;
  /** Bytes into that frame, header included (0 = just before it), or "end" = right after it. */
  offset: number | "end";
}

/** Where a fault fires: after this many client→server bytes, or at a frame position. */
export type FaultPoint = number | FramePoint;

/** What to do to one connection. Unset fields mean "forward normally". */
export interface FaultPlan {
  /** Cut both sides at this point: the server gets exactly the bytes before it, then EOF. */
  cutAfter?: FaultPoint;
  /** Reset both sides (TCP RST) at this point. */
  resetAfter?: FaultPoint;
  /** Stop forwarding in both directions at this point, without closing (0 = from the start). */
  stallAfter?: FaultPoint;
  /** Forward every write in 1-byte pieces, each flushed before the next. */
  slice?: boolean;
  /** Forward at most this many bytes per second in each direction (a slow link). */
  bytesPerSecond?: number;
}

/** Byte counters of one direction. */
export interface DirectionCounters {
  /** Bytes read from the sending side. */
  received: number;
  /** Bytes handed to the receiving side's socket. */
  forwarded: number;
  /** Socket writes that carried them (equals `forwarded` when slicing). */
  writes: number;
}

/** Options for {@linkcode FaultProxy.start}. */
export interface FaultProxyOptions {
  /** Plans for the connections in accept order; later connections get `defaultPlan`. */
  plans?: FaultPlan[];
  /** Plan for connections beyond `plans`. Default: forward normally. */
  defaultPlan?: FaultPlan;
  /** Bytes queued in the proxy per direction before it stops reading. Default 1 MiB. */
  highWaterMark?: number;
}

/** What happened to a faulted connection. */
export interface FaultRecord {
  kind: "cut" | "reset" | "stall";
  /** Client→server bytes forwarded when it fired. */
  at: number;
}

const FRAME_HEADER = 5;

/** Tracks frame boundaries of one byte stream without looping over payload bytes. */
class FrameTracker {
  /** Absolute position of the next unseen byte. */
  pos = 0;
  /** Where the frame whose header is incomplete starts. */
  frameStart = 0;
  #header: number[] = [];
  #remaining = 0;
  #counts = new Map<number, number>();
  /** Called for each frame once its header is complete. */
  onFrame?: (type: number, nth: number, start: number, length: number) => void;

  /** Feeds the next chunk: one step per frame, payloads are skipped by length. */
  push(chunk: Uint8Array): void {
    let i = 0;
    while (i < chunk.length) {
      if (this.#remaining > 0) {
        const n = Math.min(this.#remaining, chunk.length - i);
        this.#remaining -= n;
        i += n;
        continue;
      }
      if (this.#header.length === 0) this.frameStart = this.pos + i;
      this.#header.push(chunk[i++]);
      if (this.#header.length === FRAME_HEADER) {
        const [a, b, c, d, type] = this.#header;
        const length = a * 2 ** 24 + (b << 16) + (c << 8) + d;
        this.#header = [];
        this.#remaining = length;
        const nth = (this.#counts.get(type) ?? 0) + 1;
        this.#counts.set(type, nth);
        this.onFrame?.(type, nth, this.frameStart, FRAME_HEADER + length);
      }
    }
    this.pos += chunk.length;
  }

  /** True while a frame header is split across chunks. */
  get inHeader(): boolean {
    return this.#header.length > 0;
  }
}

interface Pending {
  kind: FaultRecord["kind"];
  point: FaultPoint;
  /** Absolute client→server position once known. */
  at?: number;
}

type Dir = "up" | "down";

/** One proxied connection: counters, fault controls and lifecycle. */
export class ProxiedConnection {
  /** 0-based accept order. */
  readonly index: number;
  /** Client → server counters. */
  readonly up: DirectionCounters = { received: 0, forwarded: 0, writes: 0 };
  /** Server → client counters. */
  readonly down: DirectionCounters = { received: 0, forwarded: 0, writes: 0 };
  /** Resolves once both sockets are closed. */
  readonly closed: Promise<void>;
  /** Set when a fault fired. */
  fault?: FaultRecord;
  #faulted = Promise.withResolvers<FaultRecord>();
  #client: net.Socket;
  #server: net.Socket;
  #slice: boolean;
  #rate: number;
  #hwm: number;
  #stalled = false;
  #dead = false;
  #pending: Pending[] = [];
  #tracker = new FrameTracker();
  #queues: Record<Dir, Uint8Array[]> = { up: [], down: [] };
  #queued: Record<Dir, number> = { up: 0, down: 0 };
  #pumping: Record<Dir, boolean> = { up: false, down: false };
  #ended: Record<Dir, boolean> = { up: false, down: false };

  constructor(
    index: number,
    client: net.Socket,
    target: { host: string; port: number },
    plan: FaultPlan,
    hwm: number,
  ) {
    this.index = index;
    this.#client = client;
    this.#slice = plan.slice === true;
    this.#rate = plan.bytesPerSecond ?? 0;
    if (this.#rate < 0 || !Number.isFinite(this.#rate)) {
      throw new RangeError(`Cannot proxy: bytesPerSecond ${this.#rate} must be a positive number`);
    }
    this.#hwm = hwm;
    for (const kind of ["cut", "reset", "stall"] as const) {
      const point = kind === "cut" ? plan.cutAfter : kind === "reset" ? plan.resetAfter : plan.stallAfter;
      if (point !== undefined) {
        this.#pending.push({ kind, point, at: typeof point === "number" ? point : undefined });
      }
    }
    this.#tracker.onFrame = (type, nth, start, length) => {
      for (const p of this.#pending) {
        if (p.at !== undefined || typeof p.point === "number") continue;
        if (p.point.frameType === type && p.point.nth === nth) {
          p.at = start + (p.point.offset === "end" ? length : p.point.offset);
        }
      }
    };
    client.setNoDelay(true);
    // Half-open allowed on both sockets: a FIN is forwarded as a FIN, after the bytes before it.
    this.#server = net.connect({ host: target.host, port: target.port, allowHalfOpen: true });
    this.#server.setNoDelay(true);
    this.#server.once("connect", () => {
      if (!this.#stalled && !this.#dead) client.resume();
    });
    const closedClient = new Promise<void>((r) => client.once("close", () => r()));
    const closedServer = new Promise<void>((r) => this.#server.once("close", () => r()));
    this.closed = Promise.all([closedClient, closedServer]).then(() => {});
    // ECONNRESET after a reset or EPIPE after a cut end the connection; they are the point of the proxy.
    client.on("error", () => this.#teardown());
    this.#server.on("error", () => this.#teardown());
    client.on("close", () => this.#onClose("up"));
    this.#server.on("close", () => this.#onClose("down"));
    client.on("data", (chunk: Uint8Array) => this.#onData("up", chunk));
    this.#server.on("data", (chunk: Uint8Array) => this.#onData("down", chunk));
    client.on("end", () => this.#onEnd("up"));
    this.#server.on("end", () => this.#onEnd("down"));
    // A point at byte 0 fires before anything moves.
    const now = this.#pending.find((p) => p.at === 0);
    if (now) this.#fire(now);
  }

  /** Resolves when a planned (or requested) fault fires. */
  faulted(): Promise<FaultRecord> {
    return this.#faulted.promise;
  }

  /** Cuts both sides now: bytes already forwarded still reach the server, then EOF. */
  cut(): void {
    this.#apply("cut");
  }

  /** Resets both sides now with a TCP RST (a plain destroy where the runtime has no RST). */
  reset(): void {
    this.#apply("reset");
  }

  /** Stops forwarding in both directions; the sockets stay open. */
  stall(): void {
    this.#apply("stall");
  }

  /** Forwards again after a stall, including what was held back. */
  resume(): void {
    if (!this.#stalled || this.#dead) return;
    this.#stalled = false;
    this.#client.resume();
    this.#server.resume();
    this.#pump("up");
    this.#pump("down");
  }

  /** True once the connection is torn down (by a fault or by either end). */
  get dead(): boolean {
    return this.#dead;
  }

  /** True while stalled. */
  get stalled(): boolean {
    return this.#stalled;
  }

  /** Destroys both sides (used by {@linkcode FaultProxy.close}). */
  destroy(): void {
    this.#teardown();
  }

  #onData(dir: Dir, chunk: Uint8Array): void {
    if (this.#dead) return;
    this.#counters(dir).received += chunk.length;
    if (dir === "up") this.#tracker.push(chunk);
    this.#queues[dir].push(chunk);
    this.#queued[dir] += chunk.length;
    // Bounded: stop reading when too much is queued, so TCP pushes back on the sender.
    if (this.#queued[dir] >= this.#hwm) this.#source(dir).pause();
    this.#pump(dir);
  }

  #onEnd(dir: Dir): void {
    this.#ended[dir] = true;
    this.#pump(dir);
  }

  #onClose(dir: Dir): void {
    // An end that vanished without FIN (destroyed, reset): nothing more will come from it.
    if (!this.#ended[dir] && !this.#stalled) this.#teardown();
  }

  #counters(dir: Dir): DirectionCounters {
    return dir === "up" ? this.up : this.down;
  }
  #source(dir: Dir): net.Socket {
    return dir === "up" ? this.#client : this.#server;
  }
  #sink(dir: Dir): net.Socket {
    return dir === "up" ? this.#server : this.#client;
  }

  async #pump(dir: Dir): Promise<void> {
    if (this.#pumping[dir]) return;
    this.#pumping[dir] = true;
    try {
      const queue = this.#queues[dir];
      while (queue.length > 0 && !this.#stalled && !this.#dead) {
        const chunk = queue[0];
        const from = this.#counters(dir).forwarded;
        let stop = from + chunk.length;
        let due: Pending | undefined;
        if (dir === "up") {
          due = this.#nextDue();
          if (due && due.at! <= from) {
            this.#fire(due);
            continue;
          }
          if (due) stop = Math.min(stop, due.at!);
          // A frame point is known only once its header is whole: never forward a split header early.
          if (this.#pending.some((p) => p.at === undefined) && this.#tracker.inHeader) {
            stop = Math.min(stop, this.#tracker.frameStart);
          }
          if (stop <= from) break; // wait for the rest of the header
        }
        const take = stop - from;
        if (take === chunk.length) queue.shift();
        else queue[0] = chunk.subarray(take);
        this.#queued[dir] -= take;
        await this.#write(dir, chunk.subarray(0, take));
        if (due && this.#counters(dir).forwarded === due.at) this.#fire(due);
        if (this.#queued[dir] < this.#hwm / 2 && !this.#stalled && !this.#dead) this.#source(dir).resume();
      }
      if (queue.length === 0 && this.#ended[dir] && !this.#stalled && !this.#dead) {
        // Forward a half-close once everything before it is through.
        this.#sink(dir).end();
      }
    } catch {
      this.#teardown();
    } finally {
      this.#pumping[dir] = false;
    }
  }

  /** The earliest pending fault whose position is known. */
  #nextDue(): Pending | undefined {
    let best: Pending | undefined;
    for (const p of this.#pending) if (p.at !== undefined && (!best || p.at < best.at!)) best = p;
    return best;
  }

  async #write(dir: Dir, chunk: Uint8Array): Promise<void> {
    const sink = this.#sink(dir);
    const counters = this.#counters(dir);
    if (this.#rate > 0) {
      // Small pieces, each followed by its share of a second: a smooth slow link.
      const piece = Math.max(1, Math.min(16 * 1024, Math.ceil(this.#rate / 20)));
      for (let i = 0; i < chunk.length; i += piece) {
        if (this.#stalled || this.#dead) {
          const rest = chunk.subarray(i);
          this.#queues[dir].unshift(rest);
          this.#queued[dir] += rest.length;
          return;
        }
        const part = chunk.subarray(i, i + piece);
        counters.forwarded += part.length;
        counters.writes++;
        if (!sink.write(part)) await drained(sink);
        await new Promise((r) => setTimeout(r, (part.length / this.#rate) * 1000));
      }
      return;
    }
    if (!this.#slice) {
      counters.forwarded += chunk.length;
      counters.writes++;
      if (!sink.write(chunk)) await drained(sink);
      return;
    }
    for (let i = 0; i < chunk.length; i++) {
      if (this.#stalled || this.#dead) {
        // Keep the rest for resume().
        const rest = chunk.subarray(i);
        this.#queues[dir].unshift(rest);
        this.#queued[dir] += rest.length;
        return;
      }
      counters.forwarded += 1;
      counters.writes++;
      // Each byte is flushed before the next, so with TCP_NODELAY it leaves as its own segment.
      await new Promise<void>((resolve, reject) => {
        sink.write(chunk.subarray(i, i + 1), (e) => (e ? reject(e) : resolve()));
      });
    }
  }

  #fire(p: Pending): void {
    this.#pending.splice(this.#pending.indexOf(p), 1);
    this.#apply(p.kind);
  }

  #apply(kind: FaultRecord["kind"]): void {
    // A stalled connection can still be cut or reset; nothing happens to a dead one.
    if (this.#dead || (this.#stalled && kind === "stall")) return;
    this.fault = { kind, at: this.up.forwarded };
    this.#faulted.resolve(this.fault);
    if (kind === "stall") {
      this.#stalled = true;
      // Stop reading both ends: the peers' writes back up into their kernel buffers.
      this.#client.pause();
      this.#server.pause();
      return;
    }
    this.#dead = true;
    if (kind === "reset") {
      resetSocket(this.#client);
      // What was forwarded leaves first, so "after N bytes" means N bytes on the wire.
      flushed(this.#server).then(() => resetSocket(this.#server));
      return;
    }
    this.#client.destroy();
    this.#server.end();
    flushed(this.#server).then(() => this.#server.destroy());
  }

  #teardown(): void {
    this.#dead = true;
    this.#client.destroy();
    this.#server.destroy();
  }
}

function resetSocket(socket: net.Socket): void {
  const s = socket as net.Socket & { resetAndDestroy?: () => void };
  if (typeof s.resetAndDestroy === "function" && !socket.destroyed && !socket.connecting) {
    try {
      s.resetAndDestroy();
      return;
    } catch {
      // Fall through to a plain destroy.
    }
  }
  socket.destroy();
}

function drained(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      socket.off("drain", done);
      socket.off("close", done);
      resolve();
    };
    socket.on("drain", done);
    socket.on("close", done);
  });
}

/** Resolves once everything written to `socket` was handed to the kernel (or it closed). */
function flushed(socket: net.Socket): Promise<void> {
  if (socket.destroyed || socket.writableLength === 0) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, 2_000);
    function done() {
      clearTimeout(timer);
      socket.off("drain", done);
      socket.off("close", done);
      socket.off("finish", done);
      resolve();
    }
    socket.on("drain", done);
    socket.on("close", done);
    socket.on("finish", done);
  });
}

/**
 * The proxy. Start it with {@linkcode FaultProxy.start}, point clients at
 * `proxy.host:proxy.port`, and inspect {@linkcode ProxiedConnection}s.
 *
 * @example Stall every connection, then let traffic flow again
 * ```ts
 * import { FaultProxy } from "./fault_proxy.ts";
 * const proxy = await FaultProxy.start({ host: "127.0.0.1", port: 9000 });
 * proxy.stallAll();
 * proxy.resumeAll();
 * await proxy.close();
 * ```
 */
export class FaultProxy {
  readonly host = "127.0.0.1";
  readonly port: number;
  /** Every connection so far, in accept order. */
  readonly connections: ProxiedConnection[] = [];
  #server: net.Server;
  #options: FaultProxyOptions;
  #waiters = new Map<number, Array<(c: ProxiedConnection) => void>>();
  #plansOverride = new Map<number, FaultPlan>();
  #target: { host: string; port: number };

  private constructor(
    server: net.Server,
    port: number,
    target: { host: string; port: number },
    options: FaultProxyOptions,
  ) {
    this.#server = server;
    this.port = port;
    this.#target = target;
    this.#options = options;
  }

  /** Points new connections at another target (e.g. a restarted server on a new port). */
  setTarget(target: { host?: string; port: number }): void {
    this.#target = { host: target.host ?? "127.0.0.1", port: target.port };
  }

  /**
   * Listens on 127.0.0.1:0 and forwards to `target` (host defaults to 127.0.0.1).
   *
   * @example
   * ```ts
   * import { FaultProxy } from "./fault_proxy.ts";
   * const proxy = await FaultProxy.start({ port: 9000 }, { defaultPlan: { slice: true } });
   * await proxy.close();
   * ```
   */
  static start(
    target: { host?: string; port: number },
    options: FaultProxyOptions = {},
  ): Promise<FaultProxy> {
    const to = { host: target.host ?? "127.0.0.1", port: target.port };
    if (!Number.isInteger(to.port) || to.port <= 0 || to.port > 65535) {
      throw new RangeError(`Cannot start proxy: target port ${to.port} is not 1..65535`);
    }
    const hwm = options.highWaterMark ?? 1024 * 1024;
    return new Promise((resolve, reject) => {
      let proxy: FaultProxy;
      const server = net.createServer(
        { noDelay: true, pauseOnConnect: true, allowHalfOpen: true },
        (client) => {
          const index = proxy.connections.length;
          const plan = proxy.#plansOverride.get(index) ?? options.plans?.[index] ?? options.defaultPlan ?? {};
          const conn = new ProxiedConnection(index, client, proxy.#target, plan, hwm);
          proxy.connections.push(conn);
          for (const w of proxy.#waiters.get(index) ?? []) w(conn);
          proxy.#waiters.delete(index);
        },
      );
      server.once("error", reject);
      server.listen({ host: "127.0.0.1", port: 0 }, () => {
        server.off("error", reject);
        proxy = new FaultProxy(server, (server.address() as net.AddressInfo).port, to, options);
        resolve(proxy);
      });
    });
  }

  /** "127.0.0.1:port", ready to pass to `send()`. */
  get address(): string {
    return `${this.host}:${this.port}`;
  }

  /** Sets the plan of the connection with this accept index (before it arrives). */
  setPlan(index: number, plan: FaultPlan): void {
    this.#plansOverride.set(index, plan);
  }

  /** Sets the plan for connections beyond the explicit ones. */
  setDefaultPlan(plan: FaultPlan): void {
    this.#options.defaultPlan = plan;
  }

  /** Resolves with the connection of this accept index, waiting for it if needed. */
  connection(index: number): Promise<ProxiedConnection> {
    const existing = this.connections[index];
    if (existing) return Promise.resolve(existing);
    return new Promise((resolve) => {
      const list = this.#waiters.get(index) ?? [];
      list.push(resolve);
      this.#waiters.set(index, list);
    });
  }

  /** Totals over all connections. */
  get totals(): { up: DirectionCounters; down: DirectionCounters } {
    const sum = (pick: (c: ProxiedConnection) => DirectionCounters) =>
      this.connections.reduce((acc, c) => ({
        received: acc.received + pick(c).received,
        forwarded: acc.forwarded + pick(c).forwarded,
        writes: acc.writes + pick(c).writes,
      }), { received: 0, forwarded: 0, writes: 0 });
    return { up: sum((c) => c.up), down: sum((c) => c.down) };
  }

  /** Cuts every open connection now. */
  cutAll(): void {
    for (const c of this.connections) if (!c.dead) c.cut();
  }

  /** Stalls every open connection now. */
  stallAll(): void {
    for (const c of this.connections) if (!c.dead) c.stall();
  }

  /** Resumes every stalled connection. */
  resumeAll(): void {
    for (const c of this.connections) c.resume();
  }

  /** Stops listening and destroys every connection. */
  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      for (const c of this.connections) c.destroy();
    });
    await Promise.all(this.connections.map((c) => c.closed));
  }
}
