/**
 * The slab pool behind the Deno read buffers and the sender's frame buffers, and the huge-page memory
 * it is carved from.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import process from "node:process";
import { FerryError } from "../../src/errors.ts";
import { HUGE_PAGE, hugePageMemory } from "../../src/runtime/libc.ts";
import { SlabPool } from "../../src/runtime/slab_pool.ts";
import { CURRENT_RUNTIME, scriptCommand } from "../helpers/process.ts";

const KiB = 1024;

/** Where a view's bytes are: its memory and offset (two views of one slot are equal here). */
const samePlace = (a: Uint8Array, b: Uint8Array) => a.buffer === b.buffer && a.byteOffset === b.byteOffset;

describe("SlabPool", () => {
  test("slots are disjoint, the size asked, and keep what is written to them", () => {
    const pool = new SlabPool(64 * KiB, 1024 * KiB, 4096 * KiB);
    const slots = Array.from({ length: 40 }, () => pool.take()!);
    assert.ok(slots.every((s) => s.length === 64 * KiB));
    slots.forEach((s, i) => s.fill(i));
    slots.forEach((s, i) => assert.ok(s.every((b) => b === i), `slot ${i} was overwritten`));
    assert.equal(pool.inUse, 40);
    assert.equal(pool.bytes, 3 * 1024 * KiB, "16 slots per slab: three slabs");
    for (const s of slots) pool.give(s);
    assert.equal(pool.inUse, 0);
  });

  test("a slot given back (or any part of it) is the next one taken; one still out never is", () => {
    const pool = new SlabPool(64 * KiB, 1024 * KiB, 1024 * KiB);
    const held = pool.take()!;
    const used = pool.take()!;
    pool.give(used.subarray(0, 1000)); // a read's chunk: the start of its slot
    const again = pool.take()!;
    assert.ok(samePlace(again, used), "the slot just given back");
    assert.equal(again.length, 64 * KiB, "the whole slot, not the part given back");
    const rest: Uint8Array[] = [];
    for (let s = pool.take(); s; s = pool.take()) rest.push(s);
    assert.equal(rest.length, 14, "16 slots, two out");
    assert.ok(
      ![...rest, again].some((s) => samePlace(s, held)),
      "a slot still out is never handed out again",
    );
    assert.equal(pool.take(), undefined, "past maxBytes: none");
    pool.give(held.subarray(5000, 6000)); // a part that starts inside the slot
    assert.ok(samePlace(pool.take()!, held));
  });

  test("giving back twice, or memory not from the pool, is an INTERNAL error", () => {
    const pool = new SlabPool(64 * KiB, 1024 * KiB, 1024 * KiB);
    const slot = pool.take()!;
    assert.ok(pool.owns(slot) && pool.owns(slot.subarray(10)));
    assert.ok(!pool.owns(new Uint8Array(64 * KiB)));
    pool.give(slot);
    const twice = (() => {
      try {
        pool.give(slot);
      } catch (e) {
        return e;
      }
    })();
    assert.ok(twice instanceof FerryError && twice.code === "INTERNAL", "a second give is refused");
    assert.throws(
      () => pool.give(new Uint8Array(10)),
      (e: unknown) => e instanceof FerryError && e.code === "INTERNAL",
    );
    assert.equal(pool.inUse, 0);
  });

  test("a pool smaller than one slab still has slots: one slab of what fits", () => {
    const pool = new SlabPool(100 * KiB, 8192 * KiB, 350 * KiB);
    const slots = [pool.take(), pool.take(), pool.take()];
    assert.ok(slots.every((s) => s?.length === 100 * KiB));
    assert.equal(pool.take(), undefined, "three slots of 100 KiB in 350 KiB");
    assert.equal(new SlabPool(100 * KiB, 8192 * KiB, 50 * KiB).take(), undefined, "no room for a slot");
  });
});

/** Whether transparent huge pages are left to programs here (`madvise` mode), where the advice matters. */
function thpMadvise(): boolean {
  try {
    return fs.readFileSync("/sys/kernel/mm/transparent_hugepage/enabled", "utf8").includes("[madvise]");
  } catch {
    return false;
  }
}

/** Runs tests/fixtures/huge_pages_probe.ts in a process of its own; its report. */
function probe(denoPermissions?: string[]): { grewKiB: number | null; length: number; extra: number } {
  const [bin, ...args] = scriptCommand(
    CURRENT_RUNTIME,
    "tests/fixtures/huge_pages_probe.ts",
    denoPermissions,
  );
  const run = spawnSync(bin, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  assert.equal(run.status, 0, run.stderr);
  return JSON.parse(run.stdout);
}

describe("hugePageMemory", () => {
  test("zeroed memory of the size asked, writable to the end", () => {
    for (const size of [1000, HUGE_PAGE - 1, 3 * HUGE_PAGE + 12345]) {
      const m = hugePageMemory(size);
      assert.equal(m.length, size);
      assert.ok(m.every((b) => b === 0));
      m[size - 1] = 7;
      assert.equal(m[size - 1], 7);
    }
  });

  test(
    "backed by 2 MiB pages once touched, where the system leaves that to the program",
    {
      skip: process.platform !== "linux" || !thpMadvise()
        ? "transparent huge pages are not in madvise mode"
        : false,
    },
    () => {
      const { grewKiB, length, extra } = probe();
      assert.equal(length, 8 * HUGE_PAGE);
      assert.equal(extra, HUGE_PAGE, "allocated 2 MiB more, to align");
      // Every 2 MiB page if memory is not too fragmented to find them; at least one in any case.
      assert.ok(grewKiB! >= HUGE_PAGE / 1024, `AnonHugePages grew by ${grewKiB} KiB`);
    },
  );

  test(
    "Deno without --allow-ffi: plain memory, and no prompt",
    { skip: CURRENT_RUNTIME !== "deno" || process.platform !== "linux" ? "Deno's sandbox, on Linux" : false },
    () => {
      // No TTY here, but --no-prompt makes a prompt an error rather than a wait: the run must not need one.
      const { length, extra } = probe(["--no-prompt", "--allow-read"]);
      assert.equal(length, 8 * HUGE_PAGE);
      assert.equal(extra, 0, "a plain Uint8Array");
    },
  );
});
