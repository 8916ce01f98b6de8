/**
 * A minimal typed event emitter, the same on every runtime.
 *
 * @example
 * ```ts
 * import { Emitter } from "./events.ts";
 * const events = new Emitter<{ tick: number }>();
 * const off = events.on("tick", (n) => console.log(n));
 * events.emit("tick", 1);
 * off();
 * ```
 */
export class Emitter<Events extends Record<string, unknown>> {
  #listeners = new Map<keyof Events, Set<(value: never) => void>>();

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof Events>(type: K, listener: (value: Events[K]) => void): () => void {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, set = new Set());
    set.add(listener as (value: never) => void);
    return () => set.delete(listener as (value: never) => void);
  }

  /** Calls every listener of `type`. A throwing listener does not stop the others. */
  emit<K extends keyof Events>(type: K, value: Events[K]): void {
    const set = this.#listeners.get(type);
    if (!set) return;
    for (const listener of set) {
      try {
        (listener as (value: Events[K]) => void)(value);
      } catch {
        // Listeners belong to the embedding program; their bugs must not break a transfer.
      }
    }
  }
}
