/** Clock and timer functions, injectable so tests need no real time. */
export interface HeartbeatClock {
  now(): number;
  setInterval(fn: () => void, ms: number): unknown;
  clearInterval(handle: unknown): void;
}

const realClock: HeartbeatClock = {
  now: () => performance.now(),
  setInterval: (fn, ms) => {
    const handle = setInterval(fn, ms);
    // Never keep a process alive just to send pings.
    (handle as { unref?: () => void }).unref?.();
    return handle;
  },
  clearInterval: (handle) => clearInterval(handle as ReturnType<typeof setInterval>),
};

/** Options for {@linkcode Heartbeat}. */
export interface HeartbeatOptions {
  /** Time between PINGs. */
  intervalMs: number;
  /** The peer is dead after `intervalMs * misses` without receiving any byte. */
  misses: number;
  /** Sends a PING frame with this token. */
  sendPing: (token: bigint) => void;
  /** When bytes last arrived from the peer, on the clock's scale. */
  lastReceivedAt: () => number;
  /** Called once when the peer is declared dead. */
  onDead: (silentMs: number) => void;
  /** Called with each measured round-trip time. */
  onRtt?: (ms: number) => void;
  clock?: HeartbeatClock;
}

/**
 * Sends PINGs, measures RTT from PONGs, and declares the peer dead when
 * nothing at all has arrived for `intervalMs * misses`. Any received byte
 * counts as a sign of life, so a PONG stuck behind a large transfer does not
 * kill a healthy connection.
 *
 * @example
 * ```ts
 * import { Heartbeat } from "./heartbeat.ts";
 * let last = performance.now();
 * const hb = new Heartbeat({
 *   intervalMs: 5000,
 *   misses: 3,
 *   sendPing: (token) => console.log("ping", token),
 *   lastReceivedAt: () => last,
 *   onDead: () => console.log("peer is gone"),
 * });
 * hb.start();
 * hb.stop();
 * ```
 */
export class Heartbeat {
  #options: HeartbeatOptions;
  #clock: HeartbeatClock;
  #handle: unknown;
  #nextToken = 1n;
  #sent = new Map<bigint, number>();
  #dead = false;
  /** The last measured round-trip time in ms, if any. */
  rttMs: number | undefined;

  constructor(options: HeartbeatOptions) {
    if (!(options.intervalMs > 0) || !(options.misses >= 1)) {
      throw new RangeError(
        `Cannot start heartbeat: interval ${options.intervalMs} ms and misses ${options.misses} must be positive`,
      );
    }
    this.#options = options;
    this.#clock = options.clock ?? realClock;
  }

  start(): void {
    if (this.#handle !== undefined) return;
    this.#handle = this.#clock.setInterval(() => this.tick(), this.#options.intervalMs);
  }

  stop(): void {
    if (this.#handle === undefined) return;
    this.#clock.clearInterval(this.#handle);
    this.#handle = undefined;
  }

  /** One heartbeat step; the timer calls it every interval. */
  tick(): void {
    if (this.#dead) return;
    const now = this.#clock.now();
    const silent = now - this.#options.lastReceivedAt();
    if (silent >= this.#options.intervalMs * this.#options.misses) {
      this.#dead = true;
      this.stop();
      this.#options.onDead(silent);
      return;
    }
    const token = this.#nextToken++;
    this.#sent.set(token, now);
    // Keep only the recent probes: a peer that never answers must not grow this map.
    if (this.#sent.size > 8) this.#sent.delete(this.#sent.keys().next().value!);
    this.#options.sendPing(token);
  }

  /** Records a PONG; returns the RTT in ms if the token was ours. */
  pong(token: bigint): number | undefined {
    const sentAt = this.#sent.get(token);
    if (sentAt === undefined) return undefined;
    this.#sent.delete(token);
    this.rttMs = this.#clock.now() - sentAt;
    this.#options.onRtt?.(this.rttMs);
    return this.rttMs;
  }
}
