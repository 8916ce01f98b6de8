/**
 * End to end: the single binary from `bun build --compile cli.ts` (the
 * package.json "compile" script) serves and sends. Built and run under
 * `bun test` only, so the suite builds it once; `deno compile` needs the
 * internet and is not tested here.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import {
  CURRENT_RUNTIME,
  ROOT,
  runCommand,
  runtimeBin,
  type ServerProcess,
  sha256File,
  startServer,
  tempDir,
} from "../helpers/process.ts";
import { jsonLines, writeRandomFile } from "./e2e_util.ts";

const SKIP = CURRENT_RUNTIME === "bun" ? false : "the binary is built and tested under bun test only";

describe("single binary (bun build --compile)", () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let binary: string;
  let server: ServerProcess | undefined;

  before(async () => {
    if (SKIP) return;
    tmp = await tempDir("ferry-e2e-binary-");
    binary = join(tmp.path, "ferry");
  });

  after(async () => {
    await server?.stop();
    await tmp?.cleanup();
  });

  test(
    "builds, and `ferry serve` + `ferry send` deliver a file",
    { timeout: 120_000, skip: SKIP },
    async () => {
      const build = await runCommand(
        runtimeBin("bun"),
        ["build", "--compile", "cli.ts", "--outfile", binary],
        {
          cwd: ROOT,
          timeoutMs: 110_000,
        },
      );
      assert.equal(build.code, 0, build.stdout + build.stderr);

      const { version } = JSON.parse(await readFile(join(ROOT, "package.json"), "utf8"));
      const v = await runCommand(binary, ["--version"]);
      assert.equal(v.code, 0, v.stderr);
      assert.equal(v.stdout.trim(), `ferry ${version}`);
      const unknown = await runCommand(binary, ["fly"]);
      assert.equal(unknown.code, 2);
      assert.match(unknown.stderr, /unknown command "fly"/);

      const inbox = join(tmp.path, "inbox");
      server = await startServer(CURRENT_RUNTIME, ["--dir", inbox], { command: [binary, "serve"] });
      const file = join(tmp.path, "src", "photo.jpg");
      await writeRandomFile(file, 700_000);
      const r = await runCommand(binary, ["send", "--json", file, `127.0.0.1:${server.port}`]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const done = jsonLines(r.stdout).find((e) => e.type === "done")?.receipt as Record<string, unknown>;
      assert.equal(done?.storedName, "photo.jpg");
      assert.equal(await sha256File(join(inbox, "photo.jpg")), await sha256File(file));
      assert.match(server.output(), /"event":"file".*"name":"photo\.jpg"/);
    },
  );
});
