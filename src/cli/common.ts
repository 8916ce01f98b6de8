import process from "node:process";
import { readFile } from "node:fs/promises";

/** Exit codes shared by the CLIs; docs/PROTOCOL.md and README list them. */
export const ExitCode = {
  OK: 0,
  /** Something unexpected; a bug report is welcome. */
  INTERNAL: 1,
  /** Bad flags or arguments. */
  USAGE: 2,
  /** The server could not be reached, or the connection was lost for good. */
  CONNECTION: 3,
  /** The server refused a file, a message or the client (auth, name, size, …). */
  REFUSED: 4,
  /** A stored file's hash or size did not match. */
  INTEGRITY: 5,
} as const;

/** Command-line arguments without the runtime and script paths. */
export function programArgs(): string[] {
  return process.argv.slice(2);
}

/** Reads an environment variable; undefined when unset or not permitted (Deno without --allow-env). */
export function readEnv(name: string): string | undefined {
  try {
    return process.env[name];
  } catch {
    return undefined;
  }
}

/**
 * Loads the shared token from `--token-file` or `FERRY_TOKEN`. Never from
 * argv, so it does not show up in `ps`.
 */
export async function loadToken(tokenFile: string | undefined): Promise<string | undefined> {
  if (tokenFile !== undefined) {
    const text = (await readFile(tokenFile, "utf8")).trim();
    if (text === "") throw new TypeError(`Token file ${tokenFile} is empty`);
    return text;
  }
  const env = readEnv("FERRY_TOKEN");
  return env === undefined || env === "" ? undefined : env;
}

/** True when stderr is an interactive terminal. */
export function stderrIsTty(): boolean {
  return Boolean((process.stderr as { isTTY?: boolean }).isTTY);
}

/** Writes a line to stdout. */
export function out(line: string): void {
  process.stdout.write(line + "\n");
}

/** Writes a line to stderr. */
export function err(line: string): void {
  process.stderr.write(line + "\n");
}
