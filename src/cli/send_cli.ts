/**
 * `ferry send` / `send.ts`: the sender's command line.
 *
 * @module
 */
import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { send, type SendEvent, type SendOptions, type SendResult } from "../client/sender.ts";
import { parseTarget } from "../client/target.ts";
import { FerryError } from "../errors.ts";
import { escapeForDisplay } from "../names/names.ts";
import { VERSION } from "../version.ts";
import { err, ExitCode, loadToken, out, stderrIsTty } from "./common.ts";
import { ProgressDisplay } from "./progress.ts";
import { parseCount, parseDuration, parseSize } from "./units.ts";

export const SEND_HELP = `ferry send ${VERSION}: send files, folders and messages to a ferry server.

Usage:
  deno run --allow-net --allow-read send.ts [options] FILE|FOLDER... HOST:PORT
  bun send.ts [options] FILE|FOLDER... HOST:PORT
  ferry send [options] FILE|FOLDER... HOST:PORT

Options:
  -m, --message TEXT     Send a text message (repeatable; may be the only thing sent)
  --json                 Print one NDJSON event per line on stdout (start, progress, done, error, …)
  -q, --quiet            No progress display
  --token-file FILE      Shared token for servers that require one (or set FERRY_TOKEN)
  --tls                  Connect with TLS, verified against the system CAs
  --ca FILE              Trust this CA certificate (PEM); implies --tls
  --pin sha256:HEX       Trust only the certificate with this fingerprint; implies --tls
  --retries N            Reconnect attempts in a row that make no progress before giving up
                         (default 8; 0 = no resume)
  --chunk-size SIZE      Bytes per data frame (default 256K)
  --window N             File headers sent ahead, for many small files (default 32); fewer if the
                         server refuses files beyond its open-file limit (SERVER_BUSY)
  --hash-first           Hash each file completely before sending any of it, and declare the
                         SHA-256 in its header. A file the server already has is then skipped
                         before a byte moves, but a large file costs a full extra read (about
                         1 s per GiB) before it starts. Default: a file larger than one chunk
                         starts at once and is hashed while it is sent (the hash follows its
                         last byte), so an identical re-send is found only at its end; files up
                         to one chunk are read once and offered with their hash either way.
  --heartbeat-interval DUR
                         PING interval while connected (default 5s)
  --heartbeat-misses N   Silent intervals before the server is declared dead and the
                         connection is re-made (default 3)
  --backoff-max DUR      Longest wait between reconnect attempts (default 10s; the first
                         wait is 250ms, doubling, with jitter)
  -h, --help             Show this help
  -V, --version          Show the version

HOST:PORT: 127.0.0.1:9000, example.org:9000, [::1]:9000 (port defaults to 9000).
SIZE takes K, M, G suffixes; DUR takes ms, s, m, h (a bare number is seconds).
With --json the last line is {"type":"summary","bytesSent":…,"reconnects":…} (bytesSent counts file
bytes written to sockets, so bytesSent minus the total size is what a resume sent again), or
{"type":"fatal","code":…,"message":…} when the send could not complete.

Exit codes:
  0  everything was delivered and verified
  1  internal error
  2  usage error
  3  connection failure (could not connect, or lost for good)
  4  refused: by the server (auth, name, size, policy, …), or a local file cannot be read
  5  integrity failure (hash or size mismatch)

Examples:
  deno run --allow-net --allow-read send.ts photo.jpg 127.0.0.1:9000
  bun send.ts ~/Pictures/album notes.txt [::1]:9000
  bun send.ts --message "lunch at 12?" 192.168.1.20:9000
  bun send.ts --json big.iso host:9000 | jq -c 'select(.type=="done")'
`;

/** Runs the sender CLI; resolves to the exit code. */
export async function sendMain(args: string[]): Promise<number> {
  let values, positionals;
  try {
    ({ values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: {
        message: { type: "string", short: "m", multiple: true },
        json: { type: "boolean", default: false },
        quiet: { type: "boolean", short: "q", default: false },
        "token-file": { type: "string" },
        tls: { type: "boolean", default: false },
        ca: { type: "string" },
        pin: { type: "string" },
        retries: { type: "string" },
        "chunk-size": { type: "string" },
        window: { type: "string" },
        "hash-first": { type: "boolean", default: false },
        "heartbeat-interval": { type: "string" },
        "heartbeat-misses": { type: "string" },
        "backoff-max": { type: "string" },
        help: { type: "boolean", short: "h", default: false },
        version: { type: "boolean", short: "V", default: false },
      },
    }));
  } catch (e) {
    return usage((e as Error).message);
  }
  if (values.help) {
    out(SEND_HELP);
    return ExitCode.OK;
  }
  if (values.version) {
    out(`ferry ${VERSION}`);
    return ExitCode.OK;
  }
  const messages = values.message ?? [];
  if (positionals.length === 0) return usage("Missing HOST:PORT");
  const files = positionals.slice(0, -1);
  if (files.length === 0 && messages.length === 0) {
    return usage("Nothing to send: give files, folders or --message");
  }

  const options: SendOptions = { messages, hashFirst: values["hash-first"] };
  let target;
  try {
    target = parseTarget(positionals[positionals.length - 1]);
    if (values.retries !== undefined) options.retries = parseCount(values.retries, "--retries");
    if (values["chunk-size"] !== undefined) {
      options.chunkSize = parseSize(values["chunk-size"], "--chunk-size");
      if (options.chunkSize < 1024) throw new TypeError(`Invalid value for --chunk-size: at least 1K`);
    }
    if (values.window !== undefined) options.window = parseCount(values.window, "--window", 1);
    if (values["heartbeat-interval"] !== undefined) {
      options.heartbeatIntervalMs = parseDuration(values["heartbeat-interval"], "--heartbeat-interval");
      if (options.heartbeatIntervalMs < 1) {
        throw new TypeError("Invalid value for --heartbeat-interval: must be ≥ 1ms");
      }
    }
    if (values["heartbeat-misses"] !== undefined) {
      options.heartbeatMisses = parseCount(values["heartbeat-misses"], "--heartbeat-misses", 1);
    }
    if (values["backoff-max"] !== undefined) {
      options.backoffMaxMs = parseDuration(values["backoff-max"], "--backoff-max");
      if (options.backoffMaxMs < 1) throw new TypeError("Invalid value for --backoff-max: must be ≥ 1ms");
    }
    if (values.pin !== undefined && !/^sha256:[0-9a-f:]{64,95}$/i.test(values.pin)) {
      throw new TypeError(`Invalid value for --pin: expected sha256:<64 hex digits>`);
    }
    if (values.tls || values.ca || values.pin) {
      options.tls = { ca: values.ca ? await readFile(values.ca, "utf8") : undefined, pin: values.pin };
    }
    options.token = await loadToken(values["token-file"]);
  } catch (e) {
    return usage((e as Error).message);
  }

  const display = !values.json && !values.quiet && stderrIsTty() ? new ProgressDisplay() : undefined;
  options.onEvent = (event: SendEvent) => {
    if (values.json) out(JSON.stringify({ time: new Date().toISOString(), ...event }));
    display?.update(event);
  };

  let result: SendResult;
  try {
    result = await send(target, files, options);
  } catch (e) {
    display?.finish();
    const error = e instanceof FerryError
      ? e
      : new FerryError("INTERNAL", String((e as Error)?.message ?? e));
    if (values.json) {
      out(
        JSON.stringify({
          time: new Date().toISOString(),
          type: "fatal",
          code: error.code,
          message: error.message,
        }),
      );
    } else err(`ferry: ${error.code}: ${escapeForDisplay(error.message)}`);
    return exitCodeFor(error);
  }
  display?.finish();
  if (values.json) {
    out(JSON.stringify({
      time: new Date().toISOString(),
      type: "summary",
      bytesSent: result.bytesSent,
      reconnects: result.reconnects,
      files: result.receipts.length,
      failures: result.failures.length,
      messages: result.messagesAcked,
    }));
  }
  if (!values.json && !values.quiet) {
    for (const r of result.receipts) {
      const renamed = r.storedName !== r.name ? ` as "${escapeForDisplay(r.storedName)}"` : "";
      err(
        `${r.duplicate ? "already there" : "delivered"}: "${escapeForDisplay(r.name)}"${renamed} sha256:${
          r.sha256.slice(0, 16)
        }…`,
      );
    }
    if (result.messagesAcked > 0) err(`${result.messagesAcked} message(s) delivered`);
  }
  for (const f of result.failures) {
    if (!values.json) {
      err(`failed: "${escapeForDisplay(f.name)}": ${f.error.code}: ${escapeForDisplay(f.error.message)}`);
    }
  }
  if (result.failures.length === 0) return ExitCode.OK;
  return Math.max(...result.failures.map((f) => exitCodeFor(f.error)));
}

function usage(message: string): number {
  err(`ferry: ${message}\nRun with --help for usage.`);
  return ExitCode.USAGE;
}

/** Maps an error code to the documented exit code. */
export function exitCodeFor(error: FerryError): number {
  switch (error.code) {
    case "CONNECTION_FAILED":
    case "PEER_DEAD":
    case "HANDSHAKE_TIMEOUT":
    case "IDLE_TIMEOUT":
    case "TRUNCATED_FRAME":
    case "TLS_MISMATCH":
      return ExitCode.CONNECTION;
    case "HASH_MISMATCH":
    case "SIZE_MISMATCH":
      return ExitCode.INTEGRITY;
    case "INTERNAL":
      return ExitCode.INTERNAL;
    case "IO_ERROR":
      // Local read errors are the user's input; remote ones are refusals. Both are not bugs.
      return ExitCode.REFUSED;
    default:
      return ExitCode.REFUSED;
  }
}
