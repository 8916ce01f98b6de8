/**
 * The ferry sender. Sends files, folders and messages to a ferry server.
 *
 *     deno run --allow-net --allow-read send.ts photo.jpg 127.0.0.1:9000
 *     bun send.ts photo.jpg 127.0.0.1:9000
 *
 * @module
 */
import process from "node:process";
import { programArgs } from "./src/cli/common.ts";
import { sendMain } from "./src/cli/send_cli.ts";

process.exit(await sendMain(programArgs()));
