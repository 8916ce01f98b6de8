/**
 * The single-binary entry point: `ferry serve …` and `ferry send …`.
 * `bun build --compile cli.ts --outfile dist/ferry` builds it.
 *
 * @module
 */
import process from "node:process";
import { err, ExitCode, programArgs } from "./src/cli/common.ts";
import { SEND_HELP, sendMain } from "./src/cli/send_cli.ts";
import { SERVE_HELP, serveMain } from "./src/cli/serve_cli.ts";
import { VERSION } from "./src/version.ts";

const [command, ...rest] = programArgs();
let code: number;
if (command === "serve") code = await serveMain(rest);
else if (command === "send") code = await sendMain(rest);
else if (command === "--version" || command === "-V") {
  console.log(`ferry ${VERSION}`);
  code = ExitCode.OK;
} else {
  const help =
    `ferry ${VERSION}\n\nUsage:\n  ferry serve [options]   (see ferry serve --help)\n  ferry send [options] FILE... HOST:PORT   (see ferry send --help)\n`;
  if (command === "--help" || command === "-h" || command === "help") {
    console.log(help + "\n" + SERVE_HELP + "\n" + SEND_HELP);
    code = ExitCode.OK;
  } else {
    err(command === undefined ? help : `ferry: unknown command "${command}"\n\n${help}`);
    code = ExitCode.USAGE;
  }
}
process.exit(code);
