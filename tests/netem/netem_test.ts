/**
 * The network-fault suite: a real `server.ts` in one network namespace and a
 * real `send.ts --json` in another, joined by a veth pair whose link is
 * impaired with `tc netem` (delay, loss, reordering, duplication), `tbf`
 * (rate), nftables (loss, duplication, a blackhole where netem is missing)
 * and `ip link set down`. Where the kernel has no sch_netem, delay and
 * reordering come from scripts/netem/tun_shaper.py, a userspace packet
 * shaper (Python standard library) joining two TUN devices, one in each
 * namespace: the peer's /32 is routed through them instead of the veth, so
 * every packet of the transfer is held and released by the shaper. Every transfer must store a hash-identical file;
 * every cut must resend at most one chunk plus the bytes in flight.
 *
 * Needs root and `ip` (Debian: iproute2; nftables, python3 and /dev/net/tun
 * for the fallbacks). Where
 * namespaces cannot be made, every case is skipped with the reason. Runs
 * under `deno test` only; under `bun test` it skips, since it already starts
 * servers and senders on both runtimes (they alternate per case).
 *
 * The addresses 10.203.0.1/30 and 10.203.0.2/30 exist only inside the two
 * namespaces this file creates; neither has a default route, so no packet
 * can leave the pair.
 *
 * Writes tests/artifacts/netem-report.md and prints it. FERRY_NETEM=0 skips
 * the suite (it takes about a minute and a half).
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import process from "node:process";
import {
  CURRENT_RUNTIME,
  ROOT,
  type RuntimeName,
  scriptCommand,
  type ServerProcess,
  sha256File,
  startServer,
  tempDir,
} from "../helpers/process.ts";

const SCRIPT = join(ROOT, "scripts", "netem", "netns.sh");
const NAME = `ferry-netem-${process.pid}-${randomBytes(3).toString("hex")}`;
const SERVER_ADDR = "10.203.0.1";
const MiB = 1024 * 1024;
const FILE_SIZE = 20 * MiB;
/** The rate case moves less: 2 MB at 1 Mbit/s already takes ~17 s. */
const RATE_FILE_SIZE = 2 * MiB;
/** The sender's default chunk (DATA payload per frame). */
const CHUNK = 256 * 1024;
/** The TCP buffer cap set in both namespaces (net.ipv4.tcp_wmem / tcp_rmem maximum). */
const TCP_BUF = MiB;
/**
 * Upper bound on file bytes the sender has written that the server never
 * stored, at the moment a connection dies:
 * - the sender's user-space socket buffer: the stream high-water mark
 *   (64 KiB at most on either runtime) plus the chunk being written;
 * - the sender's kernel send buffer (unsent and unacknowledged bytes): at
 *   most tcp_wmem max;
 * - the server's kernel receive buffer: at most tcp_rmem max;
 * - the server's user-space read queue (the transport pauses the socket at
 *   1 MiB unread) plus one partly decoded frame.
 * Packets queued in netem/tbf are still unacknowledged, so they are inside
 * the send buffer's count. Capping both TCP buffers at 1 MiB in the
 * namespaces makes the bound small next to the 20 MB file.
 */
const IN_FLIGHT_BOUND = (64 * 1024 + CHUNK + 17) + TCP_BUF + TCP_BUF + (MiB + CHUNK + 17);
/** Short heartbeats for the cut cases: dead after 1.5 s of silence. */
const HEARTBEAT = ["--heartbeat-interval", "500ms", "--heartbeat-misses", "3"];
/** How long a cut lasts: well past the 1.5 s dead-peer timeout. */
const CUT_MS = 3_000;

/** Runs the namespace helper; throws with its stderr on failure. */
function sh(args: string[], check = true): { code: number; stdout: string; stderr: string } {
  const r = spawnSync("bash", [SCRIPT, ...args], {
    encoding: "utf8",
    env: { ...process.env, FERRY_NETEM_TCP_BUF: String(TCP_BUF) },
  });
  const out = { code: r.status ?? -1, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
  if (check && out.code !== 0) {
    throw new Error(`netns.sh ${args.join(" ")} failed (${out.code}): ${out.stderr}`);
  }
  return out;
}

// --- what this machine can do (decided before the tests are declared) ------------------------
let skipAll: string | false = false;
const caps = { netem: false, tbf: false, nft: false, tun: false };
if (process.env.FERRY_NETEM === "0") {
  skipAll = "disabled by FERRY_NETEM=0";
} else if (CURRENT_RUNTIME !== "deno") {
  skipAll =
    "the netem suite runs under `deno test` only; it starts servers and senders on both runtimes itself";
} else if (typeof process.getuid === "function" && process.getuid() !== 0) {
  skipAll = "network namespaces need root";
} else if (spawnSync("ip", ["-V"]).status !== 0) {
  skipAll = "`ip` is missing (Debian: apt-get install iproute2)";
} else {
  sh(["sweep"], false); // namespaces left by a killed earlier run
  const probe = sh(["caps"], false).stdout;
  if (!/netns=yes/.test(probe)) skipAll = "`ip netns add` is not permitted here";
  caps.netem = /netem=yes/.test(probe);
  caps.tbf = /tbf=yes/.test(probe);
  caps.nft = /nft=yes/.test(probe);
  caps.tun = /tun=yes/.test(probe);
}
const NO_NETEM =
  "the kernel has no sch_netem qdisc (CONFIG_NET_SCH_NETEM), and no TUN device or python3 for tun_shaper.py";

// --- the userspace shaper (delay and reordering without sch_netem) -----------------------------
interface Shaper {
  child: ChildProcess;
  exited: Promise<void>;
  output: () => string;
}
let shaper: Shaper | undefined;
/** The shaper's counters from the case that just ran ("packets=… reordered=…"). */
let shaperStats: Record<string, number> | undefined;

/** Starts tun_shaper.py between the namespaces and routes the peer addresses through it. */
async function startShaper(args: string[]): Promise<void> {
  // stdin stays a pipe: the shaper exits when it closes (this process died), and after 150 s anyway.
  const child = spawn("bash", [SCRIPT, "shaper", NAME, ...args, "--max-seconds", "150"], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  shaper = { child, exited, output: () => out };
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout!.setEncoding("utf8").on("data", (d: string) => {
        out += d;
        if (out.includes("ready")) resolve();
      });
      child.stderr!.setEncoding("utf8").on("data", (d: string) => err += d);
      child.on("exit", (code) => reject(new Error(`tun_shaper.py exited (${code}): ${err}`)));
      timer = setTimeout(() => reject(new Error(`tun_shaper.py not ready after 10 s: ${err}`)), 10_000);
    });
  } finally {
    clearTimeout(timer);
  }
  sh(["shaper-routes", NAME]);
}

/** Stops the shaper (its TUN devices and routes go with it) and keeps its counters. */
async function stopShaper(): Promise<void> {
  const s = shaper;
  if (!s) return;
  shaper = undefined;
  s.child.kill("SIGTERM");
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([s.exited, new Promise((r) => timer = setTimeout(r, 3_000))]);
  clearTimeout(timer);
  if (s.child.exitCode === null && s.child.signalCode === null) {
    s.child.kill("SIGKILL");
    await s.exited;
  }
  const line = /stats (.*)/.exec(s.output())?.[1];
  if (line) {
    shaperStats = Object.fromEntries(
      line.split(" ").map((kv) => kv.split("=")).map(([k, v]) => [k, Number(v)]),
    );
  }
}

/**
 * Round-trip time from namespace b to the server address, measured at the TCP level without
 * touching the server: a connect to a closed port is refused after exactly one round trip
 * (SYN out, RST back). Median of 5, in ms.
 */
function synRtt(): number {
  const py = `import socket,time,statistics
r=[]
for _ in range(5):
    s=socket.socket(); t=time.monotonic()
    try: s.connect(("${SERVER_ADDR}", 9))
    except OSError: pass
    r.append((time.monotonic()-t)*1000); s.close()
print(round(statistics.median(r), 1))`;
  const r = spawnSync("bash", [SCRIPT, "exec", NAME, "b", "python3", "-c", py], { encoding: "utf8" });
  return Number(r.stdout.trim());
}

const shaped = (args: string[], how: string) => async () => {
  await startShaper(args);
  return `TUN shaper (userspace tun_shaper.py; no sch_netem here): ${how}`;
};

// --- the cases ---------------------------------------------------------------------------------
type Side = "a" | "b";
interface Case {
  name: string;
  size: number;
  /** Why it cannot run here, or false. */
  skip: string | false;
  /** Puts the impairment on the link; returns how (for the report). */
  impair?: () => string | Promise<string>;
  /** A timed outage in the middle of the transfer. */
  outage?: { start: () => string; stop: () => void };
}

const both = (f: (side: Side) => void) => {
  f("a");
  f("b");
};
const netem = (args: string) => () => {
  both((s) => sh(["qdisc", NAME, s, "netem", ...args.split(" "), "limit", "100000"]));
  return `netem ${args} (both directions)`;
};
/** A moderate rate on the data direction, so a cut lands mid-transfer instead of after it. */
const paced = () => {
  if (caps.tbf) sh(["qdisc", NAME, "b", "tbf", "rate", "50mbit", "burst", "64kbit", "latency", "50ms"]);
  return caps.tbf ? "tbf 50mbit on the data direction; " : "";
};
const blackhole = {
  start: () => {
    if (caps.netem) {
      both((s) => sh(["qdisc", NAME, s, "netem", "loss", "100%"]));
      return "netem loss 100%";
    }
    both((s) => sh(["nft-loss", NAME, s, "100"]));
    return "nftables: drop 100% of arriving packets";
  },
  stop: () => {
    if (caps.netem) both((s) => sh(["qdisc-clear", NAME, s]));
    both((s) => sh(["nft-clear", NAME, s]));
    paced();
  },
};

const cases: Case[] = [
  {
    name: "delay 100ms ± 20ms",
    size: FILE_SIZE,
    skip: caps.netem || caps.tun ? false : NO_NETEM,
    impair: caps.netem ? netem("delay 100ms 20ms distribution normal") : shaped(
      ["--delay", "100", "--jitter", "20"],
      "delay 100ms ± 20ms (normal) in both directions, packet order kept",
    ),
  },
  {
    name: "5% loss",
    size: FILE_SIZE,
    skip: caps.netem || caps.nft ? false : "needs sch_netem or nftables (apt-get install nftables)",
    impair: caps.netem ? netem("loss 5%") : () => {
      both((s) => sh(["nft-loss", NAME, s, "5"]));
      return "nftables: drop 5% of arriving packets (both directions; no sch_netem here)";
    },
  },
  {
    name: "25% reordering",
    size: FILE_SIZE,
    skip: caps.netem || caps.tun ? false : NO_NETEM,
    impair: caps.netem ? netem("delay 10ms reorder 25% 50%") : shaped(
      ["--delay", "10", "--reorder", "25"],
      "25% of packets sent at once, the rest after 10ms (both directions)",
    ),
  },
  {
    name: "1% duplication",
    size: FILE_SIZE,
    skip: caps.netem || caps.nft ? false : "needs sch_netem or nftables (apt-get install nftables)",
    impair: caps.netem ? netem("duplicate 1%") : () => {
      both((s) => sh(["nft-dup", NAME, s, "1"]));
      return "nftables: dup 1% of leaving packets (both directions; no sch_netem here)";
    },
  },
  {
    name: "1 Mbit/s rate limit (2 MB file)",
    size: RATE_FILE_SIZE,
    skip: caps.tbf || caps.netem ? false : "needs the tbf or netem qdisc",
    impair: () => {
      if (caps.tbf) {
        sh(["qdisc", NAME, "b", "tbf", "rate", "1mbit", "burst", "32kbit", "latency", "400ms"]);
        return "tbf rate 1mbit on the data direction";
      }
      sh(["qdisc", NAME, "b", "netem", "rate", "1mbit"]);
      return "netem rate 1mbit on the data direction";
    },
  },
  {
    name: `cut: 100% loss for ${CUT_MS / 1000} s, then restored`,
    size: FILE_SIZE,
    skip: caps.netem || caps.nft ? false : "needs sch_netem or nftables for a blackhole",
    impair: paced,
    outage: blackhole,
  },
  {
    name: `link down for ${CUT_MS / 1000} s, then up`,
    size: FILE_SIZE,
    skip: false,
    impair: paced,
    outage: {
      start: () => {
        sh(["link", NAME, "b", "down"]);
        return "ip link set down";
      },
      stop: () => sh(["link", NAME, "b", "up"]) && undefined,
    },
  },
];

// --- running one transfer ----------------------------------------------------------------------
interface Row {
  name: string;
  how: string;
  runtimes: string;
  size: number;
  seconds?: number;
  reconnects?: number;
  resent?: number;
  bound?: number;
  detectMs?: number;
  /** Median of the sender's `rtt` events, ms. */
  rttMs?: number;
  /** Segments the sender's TCP retransmitted: evidence the impairment was really there. */
  retransmits?: number;
  /** Packets the nftables fault rules dropped or duplicated (when nftables was used). */
  nftHits?: number;
  /** tun_shaper.py counters (when it was used): packets carried, reordered (overtaken), dropped. */
  shaper?: string;
  result: string;
}
const rows: Row[] = [];

interface SenderRun {
  code: number | string;
  events: Array<Record<string, unknown>>;
  stderr: string;
}

/** Runs send.ts in namespace b, calling `onEvent` for each --json line as it arrives. */
function runSender(
  runtime: RuntimeName,
  args: string[],
  onEvent: (e: Record<string, unknown>) => void,
  timeoutMs: number,
): Promise<SenderRun> {
  return new Promise((resolve, reject) => {
    const child = spawn("bash", [SCRIPT, "exec", NAME, "b", ...scriptCommand(runtime, "send.ts"), ...args], {
      env: { ...process.env, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const events: Array<Record<string, unknown>> = [];
    let pending = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      pending += d;
      let nl;
      while ((nl = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        if (!line.startsWith("{")) continue;
        const e = JSON.parse(line);
        events.push(e);
        onEvent(e);
      }
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => stderr += d);
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(
        new Error(
          `send.ts timed out after ${timeoutMs} ms; last events: ${JSON.stringify(events.slice(-3))}`,
        ),
      );
    }, timeoutMs);
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? signal ?? -1, events, stderr });
    });
  });
}

/** Segments retransmitted so far by the TCP of namespace `side`. */
function retransmits(side: Side): number {
  return Number(/RetransSegs (\d+)/.exec(sh(["tcp-stats", NAME, side]).stdout)?.[1] ?? 0);
}

/** Packets ferry's nftables rules dropped or duplicated, both namespaces. */
function nftCount(): number {
  return Number(sh(["nft-count", NAME, "a"]).stdout.trim()) +
    Number(sh(["nft-count", NAME, "b"]).stdout.trim());
}

async function clearLink(): Promise<void> {
  await stopShaper();
  both((s) => {
    sh(["qdisc-clear", NAME, s]);
    sh(["nft-clear", NAME, s]);
    sh(["link", NAME, s, "up"]);
  });
}

let work: { path: string; cleanup: () => Promise<void> } | undefined;
const sources = new Map<number, { path: string; sha256: string }>();

async function source(size: number): Promise<{ path: string; sha256: string }> {
  let s = sources.get(size);
  if (!s) {
    const path = join(work!.path, `source-${size}.bin`);
    await writeFile(path, randomBytes(size));
    s = { path, sha256: await sha256File(path) };
    sources.set(size, s);
  }
  return s;
}

if (skipAll) {
  // One visible skipped test that says why, on every runner.
  test(`network faults between namespaces (skipped: ${skipAll})`, { skip: skipAll }, () => {});
}

describe("network faults between namespaces (netem)", { skip: skipAll }, () => {
  before(() => {
    sh(["up", NAME]);
  });
  after(async () => {
    await stopShaper();
    sh(["down", NAME], false);
    await work?.cleanup();
    await writeReport();
  });

  cases.forEach((c, index) => {
    // Alternate the runtimes: half the cases have a Bun server and a Deno sender.
    const serverRt: RuntimeName = index % 2 === 0 ? "deno" : "bun";
    const senderRt: RuntimeName = serverRt === "deno" ? "bun" : "deno";
    test(c.name, { skip: c.skip, timeout: 120_000 }, async () => {
      work ??= await tempDir("ferry-netem-");
      const src = await source(c.size);
      const inbox = join(work.path, `inbox-${index}`);
      await mkdir(inbox, { recursive: true });
      const row: Row = {
        name: c.name,
        how: "",
        runtimes: `${serverRt} → ${senderRt}`,
        size: c.size,
        result: "FAILED",
      };
      rows.push(row);
      const heartbeat = c.outage ? HEARTBEAT : [];
      let server: ServerProcess | undefined;
      try {
        await clearLink();
        shaperStats = undefined;
        server = await startServer(serverRt, ["--host", SERVER_ADDR, "--dir", inbox, ...heartbeat], {
          command: ["bash", SCRIPT, "exec", NAME, "a", ...scriptCommand(serverRt, "server.ts")],
          env: { DENO_NO_UPDATE_CHECK: "1" },
        });
        row.how = (await c.impair?.()) ?? "";
        const rtt0 = shaper ? synRtt() : undefined;
        const retransBefore = retransmits("b");
        let nftHits = 0;

        let cutAt = 0;
        let detectedAt = 0;
        let outage: Promise<void> | undefined;
        const run = await runSender(senderRt, [
          "--json",
          "--retries",
          "30",
          "--backoff-max",
          "1s",
          ...heartbeat,
          src.path,
          `${SERVER_ADDR}:${server.port}`,
        ], (e) => {
          // The outage starts once a quarter of the file is through, and ends CUT_MS later.
          if (c.outage && !outage && e.type === "progress" && (e.totalSent as number) >= c.size / 4) {
            row.how += c.outage.start();
            cutAt = performance.now();
            outage = new Promise((resolve) =>
              setTimeout(() => {
                nftHits += nftCount();
                c.outage!.stop();
                resolve();
              }, CUT_MS)
            );
          }
          if (e.type === "reconnect" && cutAt && !detectedAt) detectedAt = performance.now();
        }, 110_000);
        await outage;
        if (shaper) {
          await stopShaper();
          const st: Record<string, number> = (shaperStats as Record<string, number> | undefined) ?? {};
          row.shaper = `${st.packets ?? "?"} pkts, ${st.reordered ?? "?"} reordered (${
            st.overtook ?? "?"
          } overtook), ${st.dropped ?? "?"} dropped; idle SYN RTT ${rtt0} ms`;
          console.log(`tun_shaper.py (${c.name}): ${JSON.stringify(st)}`);
          assert.ok((st.packets ?? 0) > 1000, `the shaper carried too few packets: ${JSON.stringify(st)}`);
          if (c.name.includes("reorder")) {
            assert.ok((st.reordered ?? 0) > 0, `the shaper reordered nothing: ${JSON.stringify(st)}`);
          } else {
            // 100 ms ± 20 ms each way: an idle round trip near 200 ms.
            assert.ok(rtt0! > 140 && rtt0! < 300, `idle SYN RTT ${rtt0} ms, expected about 200`);
          }
        }
        row.retransmits = retransmits("b") - retransBefore;
        nftHits += nftCount();
        if (row.how.includes("nftables")) row.nftHits = nftHits;

        const describeRun = () => `exit ${run.code}\n${run.stderr}\n${JSON.stringify(run.events.slice(-5))}`;
        assert.equal(run.code, 0, describeRun());
        const start = run.events.find((e) => e.type === "start");
        const summary = run.events.find((e) => e.type === "summary");
        assert.ok(start && summary, describeRun());
        row.seconds = (Date.parse(summary.time as string) - Date.parse(start.time as string)) / 1000;
        row.reconnects = summary.reconnects as number;
        row.resent = (summary.bytesSent as number) - c.size;
        // Only a connection that carried file bytes can cause a resend: count those drops.
        let drops = 0;
        let sentBefore = 0;
        for (const e of run.events) {
          if (e.type !== "reconnect") continue;
          if ((e.bytesSent as number) > sentBefore) drops++;
          sentBefore = e.bytesSent as number;
        }
        row.bound = drops * (CHUNK + IN_FLIGHT_BOUND);
        if (detectedAt) row.detectMs = Math.round(detectedAt - cutAt);
        const rtts = run.events.filter((e) => e.type === "rtt").map((e) => e.ms as number).sort((x, y) =>
          x - y
        );
        if (rtts.length > 0) row.rttMs = rtts[Math.floor(rtts.length / 2)];
        // A transfer that spans several heartbeat intervals must have measured its RTT (send --json).
        const intervalS = c.outage ? 0.5 : 5;
        if (row.seconds > 3 * intervalS) assert.ok(rtts.length > 0, "no rtt event from send --json");

        assert.equal(
          await sha256File(join(inbox, "source-" + c.size + ".bin")),
          src.sha256,
          "stored file differs",
        );
        const left = (await readdir(join(inbox, ".ferry", "partial"))).filter((f) => !f.endsWith(".tmp"));
        assert.deepEqual(left, [], "no partial may remain");
        if (c.outage) {
          assert.ok(cutAt > 0, "the transfer finished before the outage could start");
          assert.ok(row.reconnects >= 1, "the outage did not force a reconnect");
        }
        // Each drop may cost one chunk plus what was in flight; never the whole file.
        assert.ok(row.resent >= 0 && row.resent <= row.bound, `resent ${row.resent} > bound ${row.bound}`);
        assert.ok(row.resent < c.size, `resent ${row.resent}: the whole file`);
        row.result = "ok";
      } finally {
        await clearLink();
        await server?.stop("SIGKILL");
      }
    });
  });

  for (const c of cases) {
    if (c.skip) {
      rows.push({ name: c.name, how: "", runtimes: "", size: c.size, result: `skipped: ${c.skip}` });
    }
  }
});

async function writeReport(): Promise<void> {
  const fmt = (n?: number) => (n === undefined ? "" : n.toLocaleString("en-US"));
  const lines = [
    "# ferry network-fault report",
    "",
    `Generated ${new Date().toISOString()} by tests/netem/netem_test.ts.`,
    `Server in one network namespace, sender (\`send.ts --json\`) in another, over a veth pair; TCP buffers`,
    `capped at ${TCP_BUF / MiB} MiB in both. Default chunk ${
      CHUNK / 1024
    } KiB. Cut cases use heartbeat 500 ms × 3`,
    `on both sides and a 50 Mbit/s tbf so the outage lands mid-transfer. "bound" is drops × (chunk +`,
    `in-flight bound ${fmt(IN_FLIGHT_BOUND)} B: sender stream buffer + chunk, tcp_wmem max, tcp_rmem max,`,
    "server read queue + one frame), where drops counts lost connections that had carried file bytes;",
    "failed reconnect attempts during an outage send nothing and add nothing.",
    `Kernel capabilities: netem=${caps.netem} tbf=${caps.tbf} nft=${caps.nft} tun=${caps.tun}.`,
    `"how" names the mechanism behind each fault: \`tc netem\`, \`tbf\`, nftables, \`ip link\`, or, where`,
    "sch_netem is missing, the userspace TUN shaper (scripts/netem/tun_shaper.py, both namespaces route",
    'the peer through its TUN devices); "shaper" gives its counters (reordered = packets overtaken by',
    "a later one).",
    "",
    "| case | how | server → sender | size | duration (s) | reconnects | bytes resent | bound | dead-peer detect (ms) | RTT median (ms) | sender TCP retransmits | nft hits | shaper | result |",
    "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ...rows.map((r) =>
      `| ${r.name} | ${r.how} | ${r.runtimes} | ${fmt(r.size)} | ${r.seconds?.toFixed(2) ?? ""} | ${
        fmt(r.reconnects)
      } | ${fmt(r.resent)} | ${fmt(r.bound)} | ${fmt(r.detectMs)} | ${fmt(r.rttMs)} | ${
        fmt(r.retransmits)
      } | ${fmt(r.nftHits)} | ${r.shaper ?? ""} | ${r.result} |`
    ),
    "",
  ];
  const text = lines.join("\n");
  await mkdir(join(ROOT, "tests", "artifacts"), { recursive: true });
  await writeFile(join(ROOT, "tests", "artifacts", "netem-report.md"), text);
  console.log(text);
}
