/**
 * The load simulator's outgoing-frame tap: it must follow frames across any
 * write split, report FILE headers, and cut at exactly the chosen byte.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { encodeDataHeader, encodeMessage, type FileMessage } from "../../src/protocol/messages.ts";
import { OutgoingFrameTap } from "../../src/load/tap.ts";
import { loopbackTarget, summarizeLatency } from "../../src/load/simulator.ts";

function fileFrame(id: number, name: string, size: number): Uint8Array {
  return encodeMessage({
    kind: "file",
    id,
    flags: 1,
    size,
    sha256: new Uint8Array(32).fill(id),
    mtimeMs: 0,
    name,
    mime: "",
  });
}

/** A client's byte stream: two FILE headers, DATA for each, ENDs, a PING. */
function stream(): { bytes: Uint8Array; dataStart: Map<string, number> } {
  const parts: Uint8Array[] = [];
  const dataStart = new Map<string, number>();
  let length = 0;
  const push = (p: Uint8Array) => {
    parts.push(p);
    length += p.length;
  };
  push(fileFrame(1, "a.bin", 3000));
  push(fileFrame(2, "dir/b.bin", 100));
  for (const [id, name, size, chunk] of [[1, "a.bin", 3000, 1000], [2, "dir/b.bin", 100, 64]] as const) {
    for (let offset = 0; offset < size; offset += chunk) {
      const n = Math.min(chunk, size - offset);
      push(encodeDataHeader(id, offset, n));
      if (offset === 0) dataStart.set(name, length);
      push(new Uint8Array(n).fill(7));
    }
    push(encodeMessage({ kind: "end", id }));
  }
  push(encodeMessage({ kind: "ping", token: 5n }));
  const bytes = new Uint8Array(length);
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.length;
  }
  return { bytes, dataStart };
}

/** Splits `bytes` into writes of the given sizes (cycled), each write as 1–2 parts. */
function writes(bytes: Uint8Array, sizes: number[]): Uint8Array[][] {
  const out: Uint8Array[][] = [];
  for (let at = 0, i = 0; at < bytes.length; i++) {
    const n = Math.min(sizes[i % sizes.length], bytes.length - at);
    const w = bytes.subarray(at, at + n);
    out.push(n > 1 && i % 2 ? [w.subarray(0, n >> 1), w.subarray(n >> 1)] : [w]);
    at += n;
  }
  return out;
}

const SPLITS: Array<[string, number[]]> = [
  ["one write", [1 << 20]],
  ["byte by byte", [1]],
  ["split inside headers", [3, 7, 2]],
  ["odd sizes", [13, 1, 97, 5]],
  ["frame-ish sizes", [17, 1000, 4]],
];

describe("OutgoingFrameTap", () => {
  for (const [label, sizes] of SPLITS) {
    test(`reports FILE headers and forwards everything: ${label}`, () => {
      const { bytes } = stream();
      const files: FileMessage[] = [];
      const data: Array<[string | undefined, number, number]> = [];
      const tap = new OutgoingFrameTap({
        onFile: (f) => files.push(f),
        cutData: (f, offset, length) => {
          data.push([f?.name, offset, length]);
          return undefined;
        },
      });
      let forwarded = 0;
      for (const w of writes(bytes, sizes)) {
        const r = tap.process(w);
        assert.equal(r.cut, false);
        forwarded += r.forward.reduce((n, p) => n + p.length, 0);
      }
      assert.equal(forwarded, bytes.length);
      assert.deepEqual(files.map((f) => [f.id, f.name, f.size]), [[1, "a.bin", 3000], [2, "dir/b.bin", 100]]);
      assert.deepEqual(data, [
        ["a.bin", 0, 1000],
        ["a.bin", 1000, 1000],
        ["a.bin", 2000, 1000],
        ["dir/b.bin", 0, 64],
        ["dir/b.bin", 64, 36],
      ]);
    });

    for (const cutAt of [0, 1, 1500, 2999]) {
      test(`cuts a.bin at payload byte ${cutAt}: ${label}`, () => {
        const { bytes, dataStart } = stream();
        const tap = new OutgoingFrameTap({
          cutData: (f, offset, length) =>
            f?.name === "a.bin" && offset <= cutAt && cutAt < offset + length ? cutAt - offset : undefined,
        });
        let forwarded = 0;
        let cut = false;
        for (const w of writes(bytes, sizes)) {
          const r = tap.process(w);
          forwarded += r.forward.reduce((n, p) => n + p.length, 0);
          if (r.cut) {
            cut = true;
            break;
          }
        }
        assert.equal(cut, true);
        assert.equal(tap.cut, true);
        // Payload bytes before the cut plus every header that precedes them (17 per DATA frame).
        const frameHeaders = 17 * (Math.floor(cutAt / 1000));
        assert.equal(forwarded, dataStart.get("a.bin")! + cutAt + frameHeaders);
        assert.deepEqual(tap.process([new Uint8Array(5)]), { forward: [], cut: true });
      });
    }
  }
});

describe("load simulator helpers", () => {
  test("loopbackTarget accepts loopback and refuses everything else", () => {
    assert.deepEqual(loopbackTarget("127.0.0.1:9000"), { hostname: "127.0.0.1", port: 9000 });
    assert.deepEqual(loopbackTarget("127.8.9.10:1"), { hostname: "127.8.9.10", port: 1 });
    assert.deepEqual(loopbackTarget("[::1]:9000"), { hostname: "::1", port: 9000 });
    assert.deepEqual(loopbackTarget("localhost:9"), { hostname: "127.0.0.1", port: 9 });
    for (const t of ["192.0.2.1:9000", "10.0.0.1:1", "[::2]:9000", "example.org:9000", "0.0.0.0:9000"]) {
      assert.throws(
        () => loopbackTarget(t),
        (e: Error) => e instanceof TypeError && /loopback/.test(e.message),
      );
    }
  });

  test("summarizeLatency uses nearest-rank percentiles", () => {
    assert.equal(summarizeLatency([]), null);
    const s = summarizeLatency(Array.from({ length: 100 }, (_, i) => 100 - i))!;
    assert.deepEqual(s, { count: 100, p50: 50, p90: 90, p99: 99, max: 100, mean: 50.5 });
    assert.equal(summarizeLatency([7])!.p99, 7);
  });
});
