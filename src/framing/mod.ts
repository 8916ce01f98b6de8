/**
 * Length-prefixed framing over a byte stream.
 *
 * @module
 */
export * from "./frame.ts";
export * from "./decoder.ts";
export * from "./encoder.ts";
