/**
 * The load simulator (bench/load.ts) as a process on the runtime running
 * this test: many clients, random cuts with resume, the loopback rule and the
 * duration cap.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { CURRENT_RUNTIME, runScript } from "../helpers/process.ts";
import type { LoadReport } from "../../src/load/simulator.ts";

async function load(
  args: string[],
  timeoutMs = 60_000,
): Promise<{ code: number | string; report: LoadReport }> {
  const r = await runScript(CURRENT_RUNTIME, "bench/load.ts", ["--json", ...args], { timeoutMs });
  let report: LoadReport;
  try {
    report = JSON.parse(r.stdout);
  } catch (e) {
    throw new Error(`bench/load.ts printed no JSON report (exit ${r.code}):\n${r.stdout}\n${r.stderr}`, {
      cause: e,
    });
  }
  return { code: r.code, report };
}

function assertConsistent(report: LoadReport, planned: number): void {
  assert.equal(report.files.planned, planned);
  assert.equal(report.files.delivered, planned, `problems: ${report.problems.join("; ")}`);
  assert.deepEqual(report.errors, {});
  assert.equal(report.timedOut, false);
  const lat = report.latencyMs!;
  assert.equal(lat.count, planned);
  assert.ok(
    lat.p50 > 0 && lat.p50 <= lat.p90 && lat.p90 <= lat.p99 && lat.p99 <= lat.max,
    JSON.stringify(lat),
  );
  const seconds = report.elapsedMs / 1000;
  assert.ok(Math.abs(report.throughput.filesPerSec - planned / seconds) <= 0.1 + planned / seconds * 0.01);
  assert.equal(report.bytes.delivered, planned * report.fileSize);
  assert.ok(report.bytes.sent >= report.bytes.delivered - report.files.duplicates * report.fileSize);
  assert.ok(report.verify, "an owned server's inbox is verified");
  assert.equal(report.verify.filesChecked, planned);
  assert.equal(report.verify.filesOk, planned);
  assert.equal(report.verify.mismatched + report.verify.missing + report.verify.extraFiles, 0);
  assert.equal(report.ok, true);
}

describe(`load simulator on ${CURRENT_RUNTIME}`, () => {
  test("200 clients × 2 files × 32 KiB against an in-process server: all arrive intact", {
    timeout: 90_000,
  }, async () => {
    const { code, report } = await load(["--clients", "200", "--files", "2", "--size", "32K"]);
    assertConsistent(report, 400);
    assert.equal(report.clients, 200);
    assert.equal(report.server, "in-process");
    assert.equal(report.reconnects, 0);
    assert.equal(report.cuts, 0);
    assert.equal(code, 0);
  });

  test("random mid-file cuts against a spawned server: senders resume, every file arrives intact", {
    timeout: 90_000,
  }, async () => {
    const { code, report } = await load([
      ...["--spawn", CURRENT_RUNTIME, "--clients", "20", "--files", "3", "--size", "64K"],
      ...["--chunk-size", "16K", "--disconnect", "0.5", "--messages", "2", "--seed", "42", "--auth"],
    ]);
    assertConsistent(report, 60);
    assert.equal(report.server, `spawned ${CURRENT_RUNTIME}`);
    assert.ok(report.cuts > 0, "some connections were cut");
    assert.ok(report.reconnects >= report.cuts, `reconnects ${report.reconnects} < cuts ${report.cuts}`);
    // With FIN cuts the server keeps the frames before the cut, so some files continue mid-way.
    assert.ok(report.resumes > 0, "some files resumed from a non-zero offset");
    assert.deepEqual(report.messages, { planned: 40, acked: 40 });
    assert.equal(report.verify!.messagesMissing, 0);
    assert.equal(code, 0);
  });

  test("refuses a non-loopback target before connecting", { timeout: 30_000 }, async () => {
    for (const target of ["192.0.2.1:9000", "[2001:db8::1]:9000", "example.org:9000"]) {
      const r = await runScript(CURRENT_RUNTIME, "bench/load.ts", ["--target", target], {
        timeoutMs: 20_000,
      });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /only connects to loopback addresses/);
      assert.equal(r.stdout, "");
    }
  });

  test("stops by itself at the duration cap and reports what did not arrive", {
    timeout: 30_000,
  }, async () => {
    const t0 = performance.now();
    // 1 item per second for 4 s of items, capped at 1 s: most items never start.
    const { code, report } = await load(
      ["--clients", "3", "--files", "4", "--size", "1K", "--rate", "1", "--duration", "1s"],
    );
    assert.ok(performance.now() - t0 < 15_000);
    assert.equal(code, 1);
    assert.equal(report.ok, false);
    assert.equal(report.timedOut, true);
    assert.ok(report.errors.TIMED_OUT > 0, JSON.stringify(report.errors));
    assert.equal(report.files.delivered + report.errors.TIMED_OUT, 12);
    assert.equal(report.verify!.filesOk, report.files.delivered);
  });
});
