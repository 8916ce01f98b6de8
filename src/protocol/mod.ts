/**
 * The ferry wire protocol: constants and typed messages.
 *
 * @module
 */
export * from "./constants.ts";
export * from "./messages.ts";
