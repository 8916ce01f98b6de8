/**
 * Renders benchmark results as Markdown tables and a small SVG bar chart.
 *
 * @module
 */

/** One timed run of one tool. Sizes in bytes. */
export interface Sample {
  ms: number;
  serverRss?: number;
  senderRss?: number;
  /** Case c: the senders' peak RSS summed over worker processes. */
  senderRssTotal?: number;
  /** CPU time (user + system) of the server process during the run, ms. */
  serverCpuMs?: number;
  /** CPU time of the sender process(es), ms. */
  senderCpuMs?: number;
}

/** One case: medians per tool. */
export interface CaseResult {
  id: string;
  /** Payload bytes moved per run. */
  bytes: number;
  files: number;
  tools: Record<string, {
    runs: number[];
    medianMs: number;
    serverRss?: number;
    senderRss?: number;
    senderRssTotal?: number;
    serverCpuMs?: number;
    senderCpuMs?: number;
  }>;
  notes: Record<string, unknown>;
}

/** Everything one `bench/run.ts` invocation measured. */
export interface BenchResults {
  date: string;
  quick: boolean;
  runs: number;
  machine: {
    nproc: number;
    cpu: string;
    ramGiB: number;
    freeGiB: number;
    kernel: string;
    loadAvg: number[];
    loadAvgEnd?: number[];
    deno: string;
    bun: string;
    rsync: string;
    socat: string;
    fs: string;
  };
  cases: CaseResult[];
  totalSeconds: number;
}

const MiB = 1024 * 1024;
const TITLES: Record<string, string> = {
  a: "one large file",
  b: "many small files, one send",
  c: "concurrent senders",
  d: "one very large file (server memory)",
};

function size(bytes: number): string {
  if (bytes >= 1024 * MiB && bytes % (1024 * MiB) === 0) return `${bytes / (1024 * MiB)} GiB`;
  if (bytes >= MiB) return `${Math.round((bytes / MiB) * 10) / 10} MiB`;
  return `${Math.round(bytes / 1024)} KiB`;
}
const sec = (ms: number) => (ms / 1000).toFixed(2);
const mibs = (bytes: number, ms: number) => (bytes / MiB / (ms / 1000)).toFixed(0);
const rss = (b?: number) => (b === undefined ? "–" : `${Math.round(b / MiB)} MiB`);
const ratio = (x: number, y?: number) => (y ? `${(x / y).toFixed(2)}×` : "–");
const cpu = (ms?: number) => (ms === undefined ? "–" : `${(ms / 1000).toFixed(2)} s`);

/** Target checks: [label, runtime, value text, met]. */
export function targets(r: BenchResults): Array<[string, string, string, boolean]> {
  const out: Array<[string, string, string, boolean]> = [];
  const c = Object.fromEntries(r.cases.map((x) => [x.id, x]));
  for (const rt of ["deno", "bun"]) {
    const t = `ferry-${rt}`;
    const a = c.a?.tools[t];
    const rsA = c.a?.tools.rsync;
    if (a && rsA) {
      const x = a.medianMs / rsA.medianMs;
      out.push(["(a) wall time ≤ 1.2× rsync", rt, `${x.toFixed(2)}×`, x <= 1.2]);
    }
    const b = c.b?.tools[t];
    const rsB = c.b?.tools.rsync;
    if (b && rsB) {
      const x = b.medianMs / rsB.medianMs;
      out.push(["(b) wall time ≤ 1.0× rsync", rt, `${x.toFixed(2)}×`, x <= 1.0]);
    }
    const cc = c.c?.tools[t];
    if (cc && a) {
      const x = (c.c.bytes / cc.medianMs) / (c.a.bytes / a.medianMs);
      out.push(["(c) throughput ≥ 70% of (a)'s", rt, `${Math.round(x * 100)}%`, x >= 0.7]);
    }
    const d = c.d?.tools[t];
    if (d?.serverRss !== undefined) {
      out.push([
        `server peak RSS ≤ 150 MiB receiving ${size(c.d.bytes)}`,
        rt,
        rss(d.serverRss),
        d.serverRss <= 150 * MiB,
      ]);
    }
    if (cc?.serverRss !== undefined) {
      out.push([
        `server peak RSS ≤ 300 MiB with ${c.c.files} senders`,
        rt,
        rss(cc.serverRss),
        cc.serverRss <= 300 * MiB,
      ]);
    }
  }
  return out;
}

/** The generated part of bench/RESULTS.md. */
export function renderMarkdown(r: BenchResults): string {
  const m = r.machine;
  const lines: string[] = [];
  lines.push(
    `Run ${r.date}${r.quick ? " (**--quick**: smoke sizes, numbers not meaningful)" : ""}, ` +
      `${r.runs} run(s) per tool, medians; ${r.totalSeconds} s in total.`,
    "",
    `- Machine: ${m.nproc} CPUs (${m.cpu}), ${m.ramGiB} GiB RAM, kernel ${m.kernel}, filesystem ${
      m.fs || "?"
    }`,
    `- Load average at start ${m.loadAvg.join(" / ")}, at end ${(m.loadAvgEnd ?? []).join(" / ")}` +
      " (1/5/15 min; above ~0.5 means other jobs shared the machine)",
    `- ${m.deno}; bun ${m.bun}; ${m.rsync || "rsync: not available"}; ${m.socat || "socat: not available"}`,
    "",
  );
  for (const c of r.cases) {
    lines.push(
      `### (${c.id}) ${TITLES[c.id] ?? c.id}: ${
        c.files > 1 ? `${c.files} × ${size(c.bytes / c.files)}` : size(c.bytes)
      }`,
      "",
    );
    const rs = c.tools.rsync?.medianMs;
    const so = c.tools.socat?.medianMs;
    const sof = c.tools["socat+fsync"]?.medianMs;
    const a = r.cases.find((x) => x.id === "a");
    if (c.id === "c") {
      lines.push(
        "| tool | median wall | aggregate MiB/s | vs (a) same runtime | server peak RSS | worker peak RSS (max / sum) | server CPU | workers' CPU | runs (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
      );
    } else {
      lines.push(
        "| tool | median wall | MiB/s | vs rsync | vs socat | vs socat+fsync | server peak RSS | sender peak RSS | server CPU | sender CPU | runs (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
      );
    }
    for (const [tool, t] of Object.entries(c.tools)) {
      if (c.id === "c") {
        // "ferry-deno ×4" compares with (a)'s "ferry-deno".
        const at = a?.tools[tool.replace(/ ×\d+$/, "")];
        const share = at ? `${Math.round(((c.bytes / t.medianMs) / (a!.bytes / at.medianMs)) * 100)}%` : "–";
        lines.push(
          `| ${tool} | ${sec(t.medianMs)} s | ${mibs(c.bytes, t.medianMs)} | ${share} | ${
            rss(t.serverRss)
          } | ` +
            `${rss(t.senderRss)} / ${rss(t.senderRssTotal)} | ${cpu(t.serverCpuMs)} | ${
              cpu(t.senderCpuMs)
            } | ` +
            `${t.runs.join(", ")} |`,
        );
      } else {
        lines.push(
          `| ${tool} | ${sec(t.medianMs)} s | ${mibs(c.bytes, t.medianMs)} | ${ratio(t.medianMs, rs)} | ` +
            `${ratio(t.medianMs, so)} | ${ratio(t.medianMs, sof)} | ${rss(t.serverRss)} | ${
              rss(t.senderRss)
            } | ` +
            `${cpu(t.serverCpuMs)} | ${cpu(t.senderCpuMs)} | ${t.runs.join(", ")} |`,
        );
      }
    }
    if (c.id === "d" && a) {
      const notes = Object.keys(c.tools).map((tool) =>
        `${tool}: ${rss(a.tools[tool]?.serverRss)} at ${size(a.bytes)}, ${rss(c.tools[tool].serverRss)} at ${
          size(c.bytes)
        }`
      );
      lines.push("", `Server peak RSS by file size: ${notes.join("; ")}.`);
    }
    lines.push("");
  }
  const t = targets(r);
  if (t.length > 0) {
    lines.push("### Targets", "", "| target | runtime | measured | |", "|---|---|---:|---|");
    for (const [label, rt, value, met] of t) {
      lines.push(`| ${label} | ${rt} | ${value} | ${met ? "met" : "**missed**"} |`);
    }
    lines.push("");
  }
  return lines.join("\n");
}

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** A horizontal bar chart of throughput (MiB/s) per case and tool. */
export function renderSvg(r: BenchResults): string {
  const rows: Array<{ label: string; value: number; tool: string } | { heading: string }> = [];
  for (const c of r.cases) {
    rows.push({ heading: `(${c.id}) ${TITLES[c.id] ?? c.id}` });
    for (const [tool, t] of Object.entries(c.tools)) {
      rows.push({ label: tool, tool, value: c.bytes / MiB / (t.medianMs / 1000) });
    }
  }
  const colors: Record<string, string> = {
    "ferry-deno": "#2a7ab0",
    "ferry-bun": "#d08a1e",
    rsync: "#6a6a6a",
    socat: "#a0a0a0",
    "socat+fsync": "#c4c4c4",
  };
  const max = Math.max(1, ...rows.map((x) => ("value" in x ? x.value : 0)));
  const left = 110;
  const width = 640;
  const barMax = width - left - 90;
  const rowH = 20;
  let y = 40;
  const parts: string[] = [];
  for (const row of rows) {
    if ("heading" in row) {
      y += 8;
      parts.push(`<text x="8" y="${y + 12}" font-weight="bold">${esc(row.heading)}</text>`);
      y += rowH;
      continue;
    }
    const w = Math.max(1, Math.round((row.value / max) * barMax));
    parts.push(
      `<text x="${left - 6}" y="${y + 13}" text-anchor="end">${esc(row.label)}</text>`,
      `<rect x="${left}" y="${y + 2}" width="${w}" height="${rowH - 6}" fill="${
        colors[row.tool] ?? "#888"
      }"/>`,
      `<text x="${left + w + 6}" y="${y + 13}">${row.value.toFixed(0)} MiB/s</text>`,
    );
    y += rowH;
  }
  const height = y + 16;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
    `font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="8" y="20" font-size="14" font-weight="bold">ferry vs rsync vs socat, loopback, median throughput ` +
    `(higher is better)</text>`,
    `<text x="8" y="34" fill="#555">${
      esc(`${r.machine.nproc} CPUs, ${r.machine.cpu}; ${r.date.slice(0, 10)}`)
    }</text>`,
    ...parts,
    `</svg>`,
    "",
  ].join("\n");
}
