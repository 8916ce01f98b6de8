/**
 * The ferry server. Receives files, folders, images and messages into an inbox.
 *
 *     deno run --allow-net --allow-read=./inbox --allow-write=./inbox server.ts --dir ./inbox
 *     bun server.ts --dir ./inbox
 *
 * @module
 */
import process from "node:process";
import { programArgs } from "./src/cli/common.ts";
import { serveMain } from "./src/cli/serve_cli.ts";

process.exit(await serveMain(programArgs()));
