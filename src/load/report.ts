import { formatBytes } from "../cli/units.ts";
import type { LoadReport } from "./simulator.ts";

/**
 * Formats a load report for people, one fact per line.
 *
 * @example
 * ```ts
 * import { runLoad } from "./simulator.ts";
 * import { formatLoadReport } from "./report.ts";
 * console.log(formatLoadReport(await runLoad({ clients: 10, files: 2 })));
 * ```
 */
export function formatLoadReport(r: LoadReport): string {
  const lines = [
    `ferry load: ${r.clients} clients × ${r.filesPerClient} files of ${formatBytes(r.fileSize)}` +
    (r.messagesPerClient ? ` + ${r.messagesPerClient} messages` : "") +
    (r.rate ? ` at ${r.rate}/s each` : ", all at once") +
    (r.disconnectProbability ? `, cut probability ${r.disconnectProbability} per file (${r.cutMode})` : ""),
    `server:      ${r.server} at ${r.target} (seed ${r.seed})`,
    `elapsed:     ${(r.elapsedMs / 1000).toFixed(2)} s${r.timedOut ? " (stopped by the duration cap)" : ""}`,
    `files:       ${r.files.delivered}/${r.files.planned} delivered` +
    (r.files.duplicates ? `, ${r.files.duplicates} already stored` : "") +
    (r.files.failed ? `, ${r.files.failed} refused` : ""),
  ];
  if (r.messages.planned) lines.push(`messages:    ${r.messages.acked}/${r.messages.planned} acknowledged`);
  lines.push(
    `throughput:  ${r.throughput.filesPerSec} files/s, ${r.throughput.mbPerSec} MB/s ` +
      `(${formatBytes(r.bytes.delivered)} delivered, ${formatBytes(r.bytes.sent)} of DATA written)`,
    r.latencyMs
      ? `latency:     p50 ${r.latencyMs.p50} ms, p90 ${r.latencyMs.p90} ms, p99 ${r.latencyMs.p99} ms, ` +
        `max ${r.latencyMs.max} ms (FILE header → RECEIPT)`
      : "latency:     no file delivered",
    `reconnects:  ${r.reconnects} (${r.cuts} cuts made, ${r.resumes} files resumed from an offset)`,
  );
  const codes = Object.entries(r.errors);
  lines.push(
    `errors:      ${codes.length === 0 ? "none" : codes.map(([code, n]) => `${code} × ${n}`).join(", ")}`,
  );
  if (r.verify) {
    const v = r.verify;
    lines.push(
      `verified:    ${v.filesOk}/${v.filesChecked} stored files match their SHA-256` +
        (v.mismatched ? `, ${v.mismatched} MISMATCHED` : "") +
        (v.missing ? `, ${v.missing} MISSING` : "") +
        (v.extraFiles ? `, ${v.extraFiles} unexpected extra files` : "") +
        (r.messages.planned
          ? `; messages: ${v.messagesMissing} missing, ${v.messagesDuplicated} stored twice`
          : ""),
    );
  } else {
    lines.push("verified:    not checked (the server's inbox is not ours)");
  }
  for (const p of r.problems) lines.push(`  ! ${p}`);
  lines.push(r.ok ? "result:      OK" : "result:      FAILED");
  return lines.join("\n");
}
