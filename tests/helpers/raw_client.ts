/**
 * Test helpers for hostile-peer tests: a scripted raw protocol peer over
 * node:net, an in-process server in a temp inbox, a snapshot of the inbox's
 * visible tree, and a check that a normal client is still served.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, writeFile } from "node:fs/promises";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type ErrorCode, send, serve, type ServerHandle, type ServerOptions } from "../../mod.ts";
import { FrameDecoder } from "../../src/framing/decoder.ts";
import type { Frame } from "../../src/framing/frame.ts";
import { Capability, DIGEST_SIZE, PROTOCOL_VERSION } from "../../src/protocol/constants.ts";
import {
  decodeMessage,
  encodeMessage,
  type ErrorMessage,
  type FileMessage,
  type Message,
  type WelcomeMessage,
} from "../../src/protocol/messages.ts";
import { authMac } from "../../src/server/auth.ts";

/** Raw clients not yet closed; `withServer` destroys leftovers so a failed case cannot hang the next. */
const openClients = new Set<RawClient>();

/** Destroys every raw client still open. */
export async function destroyAllClients(): Promise<void> {
  await Promise.all([...openClients].map((c) => c.destroy()));
}

/** Default wait for one frame from the server. Generous for a loaded CI box. */
export const FRAME_TIMEOUT_MS = 5_000;

/** SHA-256 of bytes (node:crypto, independent of ferry's store). */
export function sha256(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("sha256").update(bytes).digest());
}

/**
 * A scripted peer: writes whatever a test wants, byte-exact, and reads the
 * server's frames one at a time with a timeout.
 *
 * @example Handshake, then expect a per-file error
 * ```ts ignore
 * const c = await RawClient.connect(server.port);
 * await c.handshake();
 * c.send({ kind: "end", id: 9 });
 * await c.expectError("UNKNOWN_FILE", 9);
 * c.destroy();
 * ```
 */
export class RawClient {
  readonly socket: Socket;
  #decoder = new FrameDecoder({ maxFrameSize: 16 * 1024 * 1024 });
  #frames: Frame[] = [];
  #waiter?: () => void;
  #ended = false;
  #closed: Promise<void>;
  #decodeError?: Error;

  private constructor(socket: Socket) {
    this.socket = socket;
    openClients.add(this);
    this.#closed = new Promise((resolve) =>
      socket.once("close", () => {
        openClients.delete(this);
        resolve();
      })
    );
    socket.on("data", (chunk: Uint8Array) => {
      try {
        for (const frame of this.#decoder.decode(new Uint8Array(chunk))) this.#frames.push(frame);
      } catch (e) {
        this.#decodeError = e as Error;
      }
      this.#wake();
    });
    socket.on("end", () => {
      this.#ended = true;
      this.#wake();
    });
    socket.on("close", () => {
      this.#ended = true;
      this.#wake();
    });
    // A reset from the server is an ordinary outcome here; the reads report it.
    socket.on("error", () => {});
  }

  /** Connects to the server on loopback. `localAddress` picks the source IP (e.g. 127.0.0.2). */
  static connect(port: number, options: { host?: string; localAddress?: string } = {}): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host: options.host ?? "127.0.0.1", port, localAddress: options.localAddress });
      socket.setNoDelay(true);
      socket.once("connect", () => {
        socket.off("error", reject);
        resolve(new RawClient(socket));
      });
      socket.once("error", reject);
    });
  }

  /** True once the server ended or closed the connection. */
  get ended(): boolean {
    return this.#ended;
  }

  /** Writes raw bytes; resolves when they are handed to the kernel. */
  write(bytes: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.write(bytes, (e) => e ? reject(e) : resolve());
    });
  }

  /** Encodes and writes one message. */
  send(message: Message): Promise<void> {
    return this.write(encodeMessage(message));
  }

  /** The next frame from the server, or `null` if the connection ended first. */
  async nextFrame(timeoutMs = FRAME_TIMEOUT_MS): Promise<Frame | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const frame = this.#frames.shift();
      if (frame) return frame;
      if (this.#decodeError) throw this.#decodeError;
      if (this.#ended) return null;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`Timed out after ${timeoutMs} ms waiting for a frame from the server`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** The next decoded message, skipping the server's heartbeat PINGs. Throws if the connection ended. */
  async next(timeoutMs = FRAME_TIMEOUT_MS): Promise<Message> {
    for (;;) {
      const frame = await this.nextFrame(timeoutMs);
      if (frame === null) throw new Error("Connection ended while waiting for a frame from the server");
      const message = decodeMessage(frame);
      if (message.kind !== "ping") return message;
    }
  }

  /** Reads the next message and checks its kind. */
  async expect<K extends Message["kind"]>(
    kind: K,
    timeoutMs = FRAME_TIMEOUT_MS,
  ): Promise<Extract<Message, { kind: K }>> {
    const m = await this.next(timeoutMs);
    assert.equal(m.kind, kind, `expected ${kind}, got ${JSON.stringify(m, bigintSafe)}`);
    return m as Extract<Message, { kind: K }>;
  }

  /**
   * Reads the next message and asserts it is an ERROR with `code` and `id`
   * (0 = the whole connection).
   */
  async expectError(code: ErrorCode, id = 0, timeoutMs = FRAME_TIMEOUT_MS): Promise<ErrorMessage> {
    const m = await this.next(timeoutMs);
    assert.equal(m.kind, "error", `expected ERROR ${code}, got ${JSON.stringify(m, bigintSafe)}`);
    const e = m as ErrorMessage;
    assert.equal(e.code, code, `expected ${code}, got ${e.code}: ${e.message}`);
    assert.equal(e.id, id, `expected id ${id} for ${code}, got ${e.id}`);
    return e;
  }

  /** Resolves once the server ended the connection (FIN or reset) and nothing more was sent. */
  async waitClosed(timeoutMs = FRAME_TIMEOUT_MS): Promise<void> {
    const frame = await this.nextFrame(timeoutMs);
    if (frame !== null) {
      throw new Error(`Expected the connection to close, got frame type 0x${frame.type.toString(16)}`);
    }
  }

  /** HELLO → WELCOME, and AUTH → AUTH_OK when `token` is given. */
  async handshake(options: { token?: string } = {}): Promise<WelcomeMessage> {
    await this.send(hello());
    const welcome = await this.expect("welcome");
    assert.equal(welcome.version, PROTOCOL_VERSION);
    if (options.token !== undefined) {
      assert.ok(welcome.capabilities & Capability.AUTH, "server did not ask for AUTH");
      assert.equal(welcome.nonce.length, DIGEST_SIZE);
      await this.send({ kind: "auth", mac: authMac(options.token, welcome.nonce) });
      await this.expect("auth_ok");
    }
    return welcome;
  }

  /**
   * Sends one whole file on this connection (FILE, ACCEPT, DATA, END) and
   * returns the RECEIPT: proof that the connection is still usable.
   */
  async sendFile(
    id: number,
    name: string,
    bytes: Uint8Array,
  ): Promise<Extract<Message, { kind: "receipt" }>> {
    await this.send(fileHeader(id, name, bytes));
    const accept = await this.expect("accept");
    assert.equal(accept.id, id);
    assert.equal(accept.offset, 0);
    await this.send({ kind: "data", id, offset: 0, bytes });
    await this.send({ kind: "end", id });
    const receipt = await this.expect("receipt");
    assert.equal(receipt.id, id);
    return receipt;
  }

  /** Tears the connection down and waits for it. */
  async destroy(): Promise<void> {
    this.socket.destroy();
    await this.#closed;
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
  }
}

/** A HELLO message; override fields to make it hostile. */
export function hello(overrides: Partial<Extract<Message, { kind: "hello" }>> = {}): Message {
  return {
    kind: "hello",
    version: PROTOCOL_VERSION,
    capabilities: Capability.RESUME | Capability.MESSAGES | Capability.HEARTBEAT,
    maxFrameSize: 1024 * 1024,
    ...overrides,
  };
}

/** A FILE header for `bytes` with the right size and hash; override fields to lie. */
export function fileHeader(
  id: number,
  name: string,
  bytes: Uint8Array,
  overrides: Partial<FileMessage> = {},
): FileMessage {
  return {
    kind: "file",
    id,
    flags: 0,
    size: bytes.length,
    sha256: sha256(bytes),
    mtimeMs: 0,
    name,
    mime: "",
    ...overrides,
  };
}

function bigintSafe(_key: string, value: unknown): unknown {
  if (typeof value === "bigint") return value.toString();
  if (value instanceof Uint8Array) return `<${value.length} bytes>`;
  return value;
}

/** Lists the visible inbox tree (everything but `.ferry/`): path, type, size and content hash. */
export async function snapshotInbox(dir: string): Promise<string[]> {
  const out: string[] = [];
  async function walk(rel: string): Promise<void> {
    for (const entry of await readdir(join(dir, rel))) {
      const r = rel === "" ? entry : `${rel}/${entry}`;
      if (r === ".ferry") continue;
      const full = join(dir, r);
      const st = await lstat(full);
      if (st.isSymbolicLink()) out.push(`link ${r} -> ${await readlink(full)}`);
      else if (st.isDirectory()) {
        out.push(`dir ${r}`);
        await walk(r);
      } else {
        const hash = createHash("sha256").update(await readFile(full)).digest("hex");
        out.push(`file ${r} ${st.size} ${hash}`);
      }
    }
  }
  await walk("");
  return out.sort();
}

/** Names of partial files left in `.ferry/partial` (a refused file must leave none). */
export async function partialFiles(dir: string): Promise<string[]> {
  try {
    return (await readdir(join(dir, ".ferry", "partial"))).filter((n) => n.endsWith(".part"));
  } catch {
    return [];
  }
}

/** An in-process server on a free loopback port, with its temp inbox and scratch dir. */
export interface TestServer {
  server: ServerHandle;
  port: number;
  /** The inbox. */
  dir: string;
  /** A scratch dir outside the inbox for local files. */
  scratch: string;
  options: ServerOptions;
  /** Closes the server and removes both dirs. */
  close(): Promise<void>;
}

/**
 * Starts `serve()` on 127.0.0.1 port 0 with a fresh temp inbox. Tests pass
 * short timeouts; the defaults here only keep free-space checks from
 * depending on the test machine's disk.
 */
export async function startTestServer(options: Partial<ServerOptions> = {}): Promise<TestServer> {
  const root = await mkdtemp(join(tmpdir(), "ferry-adv-"));
  const dir = join(root, "inbox");
  const scratch = join(root, "scratch");
  await mkdir(scratch);
  const full: ServerOptions = {
    port: 0,
    hostname: "127.0.0.1",
    minFreeBytes: 0,
    graceMs: 0,
    ...options,
    dir,
  };
  const server = await serve(full);
  return {
    server,
    port: server.port,
    dir,
    scratch,
    options: full,
    async close() {
      await server.close({ graceMs: 0 });
      await rm(root, { recursive: true, force: true });
    },
  };
}

let normalCount = 0;

/**
 * Sends a small file with the real sender (`send()` from mod.ts) and checks
 * that it was stored intact: the server still serves ordinary clients.
 */
export async function assertServesNormalClient(
  t: TestServer,
  options: { token?: string } = {},
): Promise<void> {
  const name = `normal-${++normalCount}.txt`;
  const bytes = new TextEncoder().encode(`a normal client after an attack #${normalCount}\n`);
  const local = join(t.scratch, name);
  await writeFile(local, bytes);
  const result = await send(`127.0.0.1:${t.port}`, [local], {
    retries: 2,
    backoffBaseMs: 50,
    connectTimeoutMs: 5_000,
    token: options.token,
  });
  assert.deepEqual(result.failures.map((f) => `${f.error.code}: ${f.error.message}`), []);
  assert.equal(result.receipts.length, 1);
  assert.equal(result.receipts[0].storedName, name);
  assert.deepEqual(new Uint8Array(await readFile(join(t.dir, name))), bytes);
}

/** What an attack gets: the server, plus checkpoints for multi-step cases. */
export interface AttackContext extends TestServer {
  /** Re-takes the inbox snapshot (after storing a legitimate file on purpose). */
  baseline(): Promise<void>;
  /** Asserts the visible inbox still matches the snapshot. */
  unchanged(): Promise<void>;
  /**
   * Asserts the inbox is unchanged, then stores a good file with `id` on the
   * same connection (proving a per-file error left it usable) and re-takes
   * the snapshot.
   */
  stillUsable(c: RawClient, id: number): Promise<void>;
}

/**
 * Runs `attack` against a fresh server and checks the three things every
 * adversarial case must show: `attack` asserts the error itself; afterwards
 * the visible inbox is unchanged (unless `allowChange`), no name in
 * `forbidden` exists, and a normal client is served.
 */
export async function withServer(
  options: Partial<ServerOptions>,
  attack: (t: AttackContext) => Promise<void>,
  check: { forbidden?: string[]; token?: string } = {},
): Promise<void> {
  const t = await startTestServer(options);
  try {
    let before = await snapshotInbox(t.dir);
    const unchanged = async () => {
      assert.deepEqual(await snapshotInbox(t.dir), before, "the attack changed the visible inbox");
    };
    const baseline = async () => {
      before = await snapshotInbox(t.dir);
    };
    const stillUsable = async (c: RawClient, id: number) => {
      await unchanged();
      const name = `same-connection-${id}.txt`;
      const bytes = new TextEncoder().encode(`still usable after the attack (${id})\n`);
      const receipt = await c.sendFile(id, name, bytes);
      assert.equal(receipt.storedName, name);
      assert.deepEqual(new Uint8Array(await readFile(join(t.dir, name))), bytes);
      await baseline();
    };
    await attack({ ...t, baseline, unchanged, stillUsable });
    assert.deepEqual(await snapshotInbox(t.dir), before, "the attack changed the visible inbox");
    for (const name of check.forbidden ?? []) {
      await assert.rejects(lstat(join(t.dir, name)), { code: "ENOENT" }, `${name} must not exist`);
    }
    await assertServesNormalClient(t, { token: check.token });
  } finally {
    await destroyAllClients();
    await t.close();
  }
}

/** Waits until `predicate()` holds, re-checking after each server event. Fails after `timeoutMs`. */
export function untilEvent(
  server: ServerHandle,
  event: "connection" | "disconnect" | "file" | "fileError" | "message",
  predicate: () => boolean,
  timeoutMs = 10_000,
): Promise<void> {
  if (predicate()) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`Timed out after ${timeoutMs} ms waiting on "${event}" events`));
    }, timeoutMs);
    const off = server.on(event, () => {
      if (!predicate()) return;
      clearTimeout(timer);
      off();
      resolve();
    });
  });
}
