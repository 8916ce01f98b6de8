/**
 * Embedding the ferry sender in your own program.
 *
 *   deno run -A examples/embed_send.ts HOST:PORT FILE|FOLDER... [--message TEXT]
 *   bun examples/embed_send.ts 127.0.0.1:9000 photo.jpg --message "hello"
 *
 * Sends the files (and a message), resuming after a dropped connection, and
 * prints the receiver's receipt for each file. Set FERRY_TOKEN if the server
 * requires a token. Exits 1 if anything was refused.
 *
 * @module
 */
import process from "node:process";
import { FerryError, send } from "../mod.ts";

const [target, ...rest] = process.argv.slice(2);
const at = rest.indexOf("--message");
const messages = at >= 0 ? [rest[at + 1] ?? ""] : [];
const paths = at >= 0 ? [...rest.slice(0, at), ...rest.slice(at + 2)] : rest;
if (!target || (paths.length === 0 && messages.length === 0)) {
  console.error("usage: embed_send.ts HOST:PORT FILE|FOLDER... [--message TEXT]");
  process.exit(2);
}

try {
  const result = await send(target, paths, {
    messages,
    token: process.env.FERRY_TOKEN || undefined,
    onEvent: (e) => {
      if (e.type === "reconnect") console.log(`connection lost, retrying in ${e.delayMs} ms`);
    },
  });
  for (const r of result.receipts) {
    console.log(`${r.path} -> ${r.storedName} sha256 ${r.sha256}${r.duplicate ? " (already there)" : ""}`);
  }
  if (result.messagesAcked > 0) console.log(`${result.messagesAcked} message(s) delivered`);
  for (const f of result.failures) console.log(`FAILED ${f.name}: ${f.error.code}: ${f.error.message}`);
  process.exitCode = result.failures.length === 0 ? 0 : 1;
} catch (e) {
  // Connection-level problems (unreachable, auth refused, …) arrive as a FerryError with a stable code.
  console.error(e instanceof FerryError ? `${e.code}: ${e.message}` : e);
  process.exitCode = 1;
}
