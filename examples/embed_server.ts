/**
 * Embedding the ferry server in your own program.
 *
 *   deno run -A examples/embed_server.ts [INBOX_DIR] [PORT]
 *   bun examples/embed_server.ts [INBOX_DIR] [PORT]
 *
 * Listens on 127.0.0.1 (default port 9000; 0 picks a free one), stores what
 * arrives in INBOX_DIR (default ./inbox), prints one line per file and
 * message, and shuts down gracefully on Ctrl-C. Set FERRY_TOKEN to require a
 * token.
 *
 * @module
 */
import process from "node:process";
import { serve } from "../mod.ts";

const dir = process.argv[2] ?? "./inbox";
const port = Number(process.argv[3] ?? 9000);

const server = await serve({
  dir,
  port,
  hostname: "127.0.0.1",
  token: process.env.FERRY_TOKEN || undefined,
  maxFileSize: 1024 ** 3, // every limit has a default; this one is tightened to 1 GiB
});
console.log(`listening on ${server.hostname}:${server.port}, inbox ${dir}`);

server.on("file", ({ connection, receipt }) => {
  console.log(
    `stored ${receipt.name} (${receipt.size} bytes, sha256 ${receipt.sha256}) from ${connection.peer}`,
  );
});
server.on("fileError", ({ name, error }) => console.log(`refused ${name}: ${error.code}: ${error.message}`));
server.on("message", ({ text }) => console.log(`message: ${text}`));

// Let transfers in flight finish (up to 5 s), then exit.
const stop = async () => {
  console.log("stopping");
  await server.close({ graceMs: 5_000 });
  process.exit(0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
