/**
 * A bounded pool of equal-sized buffers carved from a few large slabs of memory the kernel may back
 * with 2 MiB pages ({@linkcode hugePageMemory}). For buffers that bulk data passes through many
 * times (socket reads): the pool's memory is faulted in once, in few large pages, and then reused.
 *
 * @module
 */
import { FerryError } from "../errors.ts";
import { hugePageMemory } from "./libc.ts";

interface Slab {
  memory: Uint8Array<ArrayBuffer>;
  /** 1 where the slot is handed out. */
  taken: Uint8Array;
}

/**
 * Slots of `slotSize` bytes, in slabs of `slabBytes` (or `maxBytes` if less), at most `maxBytes` in all. A slab is
 * allocated when no slot is free and there is room; slabs are never freed (the pool is for the
 * life of the process).
 *
 * @example
 * ```ts ignore
 * const pool = new SlabPool(256 * 1024, 8 * 1024 * 1024, 64 * 1024 * 1024);
 * const buffer = pool.take() ?? new Uint8Array(256 * 1024); // undefined once all 64 MiB are out
 * const n = await conn.read(buffer);
 * const chunk = buffer.subarray(0, n);
 * // … when nothing uses chunk any more:
 * if (pool.owns(chunk)) pool.give(chunk);
 * ```
 */
export class SlabPool {
  readonly slotSize: number;
  readonly #slotsPerSlab: number;
  readonly #slabBytes: number;
  readonly #maxSlabs: number;
  readonly #slabs = new Map<ArrayBuffer, Slab>();
  /** Free slots, most recently given back last (reused first: its pages are the likeliest present). */
  readonly #free: Uint8Array<ArrayBuffer>[] = [];

  constructor(slotSize: number, slabBytes: number, maxBytes: number) {
    this.slotSize = slotSize;
    // A pool smaller than a slab is one slab of what fits.
    this.#slotsPerSlab = Math.max(1, Math.floor(Math.min(slabBytes, maxBytes) / slotSize));
    this.#slabBytes = this.#slotsPerSlab * slotSize;
    this.#maxSlabs = Math.max(0, Math.floor(maxBytes / this.#slabBytes));
  }

  /** A free slot (its content is garbage), or undefined when every slot of the largest pool is out. */
  take(): Uint8Array<ArrayBuffer> | undefined {
    if (this.#free.length === 0 && !this.#grow()) return undefined;
    const slot = this.#free.pop()!;
    const slab = this.#slabs.get(slot.buffer)!;
    slab.taken[(slot.byteOffset - slab.memory.byteOffset) / this.slotSize] = 1;
    return slot;
  }

  /** Whether `view` is in this pool's memory (a slot or a part of one). */
  owns(view: Uint8Array): boolean {
    return this.#slabs.has(view.buffer as ArrayBuffer);
  }

  /**
   * Frees the slot `view` starts in (`view` is a slot or any part of one taken from it). Giving a
   * slot back twice, or memory not from this pool, is an `INTERNAL` error: the slot could then be
   * handed out twice.
   */
  give(view: Uint8Array): void {
    const slab = this.#slabs.get(view.buffer as ArrayBuffer);
    const index = slab ? Math.floor((view.byteOffset - slab.memory.byteOffset) / this.slotSize) : -1;
    if (!slab || index < 0 || index >= this.#slotsPerSlab || slab.taken[index] !== 1) {
      throw new FerryError("INTERNAL", "Buffer given back to a pool it is not out of");
    }
    slab.taken[index] = 0;
    this.#free.push(slab.memory.subarray(index * this.slotSize, (index + 1) * this.slotSize));
  }

  /** Slots handed out now. */
  get inUse(): number {
    return this.#slabs.size * this.#slotsPerSlab - this.#free.length;
  }

  /** Bytes of slabs allocated so far. */
  get bytes(): number {
    return this.#slabs.size * this.#slabBytes;
  }

  #grow(): boolean {
    if (this.#slabs.size >= this.#maxSlabs) return false;
    const memory = hugePageMemory(this.#slabBytes);
    this.#slabs.set(memory.buffer, { memory, taken: new Uint8Array(this.#slotsPerSlab) });
    // Pushed last to first, so slots are taken from the slab's start: fewer huge pages touched.
    for (let i = this.#slotsPerSlab - 1; i >= 0; i--) {
      this.#free.push(memory.subarray(i * this.slotSize, (i + 1) * this.slotSize));
    }
    return true;
  }
}
