/**
 * Load simulator: `deno task load` / `npm run load` / `bun bench/load.ts`.
 * Many concurrent senders against one server; see --help.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import process from "node:process";
import { parseArgs } from "node:util";
import { err, ExitCode, loadToken, out, stderrIsTty } from "../src/cli/common.ts";
import { parseCount, parseDuration, parseSize } from "../src/cli/units.ts";
import { formatLoadReport } from "../src/load/report.ts";
import { type LoadOptions, loopbackTarget, runLoad } from "../src/load/simulator.ts";

const HELP = `ferry load: many concurrent senders against one server, with a report.

Usage:
  deno task load [options]        npm run load -- [options]        bun bench/load.ts [options]

Load:
  --clients N          Concurrent simulated clients (default 100)
  --files N            Files per client (default 10)
  --size SIZE          Bytes per file, random content (default 64K)
  --messages N         Text messages per client, after its files (default 0)
  --message-size SIZE  Bytes per message (default 100)
  --rate R             Items per second per client, each over its own connection;
                       0 = everything at once over one connection (default 0)
  --disconnect P       Probability per file of cutting the connection part-way
                       through it; the sender must reconnect and resume (default 0)
  --cut-mode MODE      fin: bytes before the cut reach the server, then FIN (default);
                       reset: drop the socket at once (the server may lose unread bytes)
  --duration DUR       Stop after this long; unfinished items count as TIMED_OUT (default 120s)
  --max-total SIZE     Refuse plans with more file bytes than this (default 2G)
Server (default: an in-process server on a temp inbox):
  --spawn deno|bun     Start server.ts on that runtime on a temp inbox
  --target HOST:PORT   Use a running server (loopback addresses only); not verified
  --auth               With an owned server: require a random token
  --token-file FILE    Token for --target (or set FERRY_TOKEN)
Sender tuning:
  --chunk-size SIZE    Bytes per DATA frame (sender default 256K)
  --window N           FILE headers sent ahead (sender default 32)
  --retries N          Reconnects per send (default 8)
  --backoff DUR        First reconnect delay (default 100ms)
Output:
  --json               Print the report as JSON
  --seed N             Seed for cut and pacing decisions (default random)
  --work-dir DIR       Where the temp folder goes (default: the OS temp dir)
  --keep               Keep the temp folder (sources and inbox)
  -h, --help           Show this help

Exit status: 0 everything arrived (and verified), 1 something did not, 2 usage, 3 no server.
`;

async function main(args: string[]): Promise<number> {
  let options: LoadOptions;
  let json: boolean;
  try {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: {
        clients: { type: "string" },
        files: { type: "string" },
        size: { type: "string" },
        messages: { type: "string" },
        "message-size": { type: "string" },
        rate: { type: "string" },
        disconnect: { type: "string" },
        "cut-mode": { type: "string" },
        duration: { type: "string" },
        "max-total": { type: "string" },
        spawn: { type: "string" },
        target: { type: "string" },
        auth: { type: "boolean", default: false },
        "token-file": { type: "string" },
        "chunk-size": { type: "string" },
        window: { type: "string" },
        retries: { type: "string" },
        backoff: { type: "string" },
        json: { type: "boolean", default: false },
        seed: { type: "string" },
        "work-dir": { type: "string" },
        keep: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    });
    if (values.help) {
      out(HELP);
      return ExitCode.OK;
    }
    if (positionals.length > 0) throw new TypeError(`Unexpected argument: ${positionals[0]}`);
    json = values.json!;
    options = { keep: values.keep, workDir: values["work-dir"] };
    if (values.clients) options.clients = parseCount(values.clients, "--clients", 1);
    if (values.files) options.files = parseCount(values.files, "--files");
    if (values.size) options.fileSize = parseSize(values.size, "--size");
    if (values.messages) options.messages = parseCount(values.messages, "--messages");
    if (values["message-size"]) options.messageSize = parseSize(values["message-size"], "--message-size");
    if (values.rate) options.rate = parseFraction(values.rate, "--rate", Infinity);
    if (values.disconnect) options.disconnect = parseFraction(values.disconnect, "--disconnect", 1);
    const cutMode = values["cut-mode"];
    if (cutMode !== undefined) {
      if (cutMode !== "fin" && cutMode !== "reset") {
        throw new TypeError(`Invalid value for --cut-mode: "${cutMode}" (use fin or reset)`);
      }
      options.cutMode = cutMode;
    }
    if (values.duration) options.durationMs = parseDuration(values.duration, "--duration");
    if (values["max-total"]) options.maxTotalBytes = parseSize(values["max-total"], "--max-total");
    if (values["chunk-size"]) options.chunkSize = parseSize(values["chunk-size"], "--chunk-size");
    if (values.window) options.window = parseCount(values.window, "--window", 1);
    if (values.retries) options.retries = parseCount(values.retries, "--retries");
    if (values.backoff) options.backoffBaseMs = parseDuration(values.backoff, "--backoff");
    if (values.seed) options.seed = parseCount(values.seed, "--seed");
    if (values.spawn !== undefined && values.target !== undefined) {
      throw new TypeError("--spawn and --target exclude each other");
    }
    if (values.spawn !== undefined) {
      if (values.spawn !== "deno" && values.spawn !== "bun") {
        throw new TypeError(`Invalid value for --spawn: "${values.spawn}" (use deno or bun)`);
      }
      options.server = { kind: "spawn", runtime: values.spawn };
    }
    if (values.target !== undefined) {
      options.server = { kind: "target", target: loopbackTarget(values.target) };
      if (values.auth) throw new TypeError("--auth needs an owned server; use --token-file with --target");
      options.token = await loadToken(values["token-file"]);
    } else if (values.auth) {
      options.token = randomBytes(16).toString("hex");
    }
  } catch (e) {
    err(`ferry load: ${(e as Error).message}\nRun with --help for usage.`);
    return ExitCode.USAGE;
  }

  let report;
  let lastDraw = 0;
  if (!json && stderrIsTty()) {
    options.onProgress = (finished, planned) => {
      const now = performance.now();
      if (now - lastDraw < 200 && finished < planned) return;
      lastDraw = now;
      process.stderr.write(`\r${finished}/${planned} items finished `);
    };
  }
  try {
    report = await runLoad(options);
    if (lastDraw) process.stderr.write("\n");
  } catch (e) {
    err(`ferry load: ${(e as Error).message}`);
    return e instanceof RangeError ? ExitCode.USAGE : ExitCode.CONNECTION;
  }
  out(json ? JSON.stringify(report, null, 2) : formatLoadReport(report));
  return report.ok ? ExitCode.OK : 1;
}

function parseFraction(text: string, flag: string, max: number): number {
  const n = Number(text);
  if (!/^\s*\d+(\.\d+)?\s*$/.test(text) || !(n >= 0 && n <= max)) {
    throw new TypeError(
      `Invalid value for ${flag}: "${text}" is not a number${max === Infinity ? " ≥ 0" : ` in 0..${max}`}`,
    );
  }
  return n;
}

process.exitCode = await main(process.argv.slice(2));
