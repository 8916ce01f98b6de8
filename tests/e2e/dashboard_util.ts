/**
 * Helpers for the dashboard tests: a raw HTTP/1.1 client over node:net (so
 * request targets such as `/files/../x` reach the server byte for byte, with
 * no URL normalisation in between), a Server-Sent Events reader, and a real
 * server process started with `--http 0`.
 *
 * @module
 */
import { connect, type Socket } from "node:net";
import { type RuntimeName, type ServerProcess, startServer } from "../helpers/process.ts";

/** A parsed HTTP response. */
export interface RawResponse {
  status: number;
  /** Lower-case names; repeated headers joined with "\n". */
  headers: Record<string, string>;
  body: Uint8Array;
  text(): string;
}

/**
 * Sends one request with the target exactly as given and reads the whole
 * response (`Connection: close`).
 */
export function rawRequest(
  port: number,
  target: string,
  options: { method?: string; headers?: Record<string, string>; host?: string } = {},
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: "127.0.0.1", port });
    const chunks: Uint8Array[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`No complete answer to ${options.method ?? "GET"} ${target} within 10 s`));
    }, 10_000);
    socket.on("data", (d: Uint8Array) => chunks.push(new Uint8Array(d)));
    socket.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    socket.on("close", () => {
      clearTimeout(timer);
      try {
        resolve(parseResponse(concatBytes(chunks), options.method === "HEAD"));
      } catch (e) {
        reject(e);
      }
    });
    const headers = { Host: options.host ?? `127.0.0.1:${port}`, Connection: "close", ...options.headers };
    const head = `${options.method ?? "GET"} ${target} HTTP/1.1\r\n` +
      Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("") + "\r\n";
    socket.write(head);
  });
}

function parseResponse(all: Uint8Array, head: boolean): RawResponse {
  const text = new TextDecoder("latin1").decode(all);
  const end = text.indexOf("\r\n\r\n");
  if (end === -1) throw new Error(`Incomplete HTTP response: ${JSON.stringify(text.slice(0, 200))}`);
  const [statusLine, ...lines] = text.slice(0, end).split("\r\n");
  const status = Number(statusLine.split(" ")[1]);
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const i = line.indexOf(":");
    const k = line.slice(0, i).trim().toLowerCase();
    const v = line.slice(i + 1).trim();
    headers[k] = headers[k] === undefined ? v : `${headers[k]}\n${v}`;
  }
  let body = head ? new Uint8Array(0) : all.subarray(end + 4);
  if (!head && headers["transfer-encoding"]?.includes("chunked")) body = dechunk(body).bytes;
  return { status, headers, body, text: () => new TextDecoder().decode(body) };
}

/** Decodes as much of a chunked body as is complete; returns the bytes and what is left over. */
function dechunk(data: Uint8Array): { bytes: Uint8Array; rest: Uint8Array; done: boolean } {
  const out: Uint8Array[] = [];
  let pos = 0;
  for (;;) {
    const lineEnd = indexOfCrlf(data, pos);
    if (lineEnd === -1) break;
    const size = parseInt(new TextDecoder().decode(data.subarray(pos, lineEnd)), 16);
    if (Number.isNaN(size)) throw new Error("Bad chunk size in a chunked response");
    if (size === 0) return { bytes: concatBytes(out), rest: new Uint8Array(0), done: true };
    if (lineEnd + 2 + size + 2 > data.length) break;
    out.push(data.subarray(lineEnd + 2, lineEnd + 2 + size));
    pos = lineEnd + 2 + size + 2;
  }
  return { bytes: concatBytes(out), rest: data.subarray(pos), done: false };
}

function indexOfCrlf(data: Uint8Array, from: number): number {
  for (let i = data.indexOf(0x0d, from); i !== -1; i = data.indexOf(0x0d, i + 1)) {
    if (data[i + 1] === 0x0a) return i;
  }
  return -1;
}

function concatBytes(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** One Server-Sent Event. */
export interface SseEvent {
  event: string;
  data: string;
}

/**
 * Reads `/events` from the dashboard and queues its events; `next(type)`
 * waits for the next event of that type.
 */
export class SseReader {
  readonly #socket: Socket;
  readonly status: number;
  #raw: Uint8Array = new Uint8Array(0);
  #text = "";
  #chunked: boolean;
  #events: SseEvent[] = [];
  #wake?: () => void;
  #closed = false;
  #decoder = new TextDecoder();

  private constructor(socket: Socket, status: number, chunked: boolean, rest: Uint8Array) {
    this.#socket = socket;
    this.status = status;
    this.#chunked = chunked;
    socket.on("data", (d: Uint8Array) => this.#feed(new Uint8Array(d)));
    socket.on("close", () => {
      this.#closed = true;
      this.#wake?.();
    });
    this.#feed(rest);
  }

  /** Connects and waits for the response head. */
  static open(port: number, headers: Record<string, string> = {}): Promise<SseReader> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host: "127.0.0.1", port });
      let buf: Uint8Array = new Uint8Array(0);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error("No answer to GET /events within 10 s"));
      }, 10_000);
      const onData = (d: Uint8Array) => {
        buf = concatBytes([buf, new Uint8Array(d)]);
        const text = new TextDecoder("latin1").decode(buf);
        const end = text.indexOf("\r\n\r\n");
        if (end === -1) return;
        clearTimeout(timer);
        socket.off("data", onData);
        const head = text.slice(0, end).toLowerCase();
        const status = Number(head.split(" ")[1]);
        resolve(
          new SseReader(socket, status, /transfer-encoding:\s*chunked/.test(head), buf.subarray(end + 4)),
        );
      };
      socket.on("data", onData);
      socket.on("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
      socket.write(
        `GET /events HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAccept: text/event-stream\r\n` +
          Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("") + "\r\n",
      );
    });
  }

  /** The next event of `type` (earlier events of other types are dropped). */
  async next(type: string, timeoutMs = 10_000): Promise<SseEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.#events.findIndex((e) => e.event === type);
      if (i !== -1) return this.#events.splice(0, i + 1)[i];
      if (this.#closed) throw new Error(`The event stream closed before a "${type}" event`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`No "${type}" event within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** Waits for a `type` event whose parsed data satisfies `match`. */
  async until<T>(type: string, match: (data: T) => boolean, timeoutMs = 10_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const data = JSON.parse((await this.next(type, Math.max(1, deadline - Date.now()))).data) as T;
      if (match(data)) return data;
    }
  }

  close(): void {
    this.#socket.destroy();
  }

  #feed(bytes: Uint8Array): void {
    if (this.#chunked) {
      this.#raw = concatBytes([this.#raw, bytes]);
      const { bytes: body, rest } = dechunk(this.#raw);
      this.#raw = rest;
      this.#text += this.#decoder.decode(body, { stream: true });
    } else {
      this.#text += this.#decoder.decode(bytes, { stream: true });
    }
    let end;
    while ((end = this.#text.indexOf("\n\n")) !== -1) {
      const block = this.#text.slice(0, end);
      this.#text = this.#text.slice(end + 2);
      let event = "message";
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      if (data.length > 0) this.#events.push({ event, data: data.join("\n") });
    }
    this.#wake?.();
  }
}

/** A server process with its dashboard port. */
export interface DashboardServer {
  server: ServerProcess;
  httpPort: number;
}

/** Starts server.ts with `--http 0` and reads the dashboard's port from its `"event":"http"` log line. */
export async function startDashboardServer(
  runtime: RuntimeName,
  args: string[],
  options: { env?: Record<string, string> } = {},
): Promise<DashboardServer> {
  const server = await startServer(runtime, ["--http", "0", ...args], options);
  const line = JSON.parse(await server.waitForLine(/"event":"http"/));
  return { server, httpPort: line.port };
}
