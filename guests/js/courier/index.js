// The JavaScript guest SDK for Courier (`wasi:messaging@0.2.0-draft`), for
// components built with componentize-js.
//
// A guest is an ES module that exports `guest`, made by `handler`:
//
//     import { handler, send, message } from "../../courier/index.js";
//
//     export const guest = handler((messages) => {
//       send("echo", messages.map((m) => message("echo", m.data)));
//     });
//
// The handler gets the batch of messages Courier delivers. Returning
// normally accepts every message the handler did not settle itself; throwing
// a `MessagingError` (`new OtherError("why")`, ...) rejects the batch with
// that error (redelivered, then dead-lettered); throwing anything else traps
// the instance, which Courier counts against the message and replaces.
//
// `send` connects to the guest's default client (or the named one) and sends;
// `complete` / `abandon` settle one message; `subscribe` replaces the
// guest's subscriptions; `env` reads the guest's configured environment.
//
// Build against the world in guests/js/wit (`--world-name guest`): the
// messaging world plus wasi:cli/environment, which `env` reads. Host errors arrive as the typed errors
// `Unauthorized`, `Timeout`, `ConnectionError` and `OtherError`, all
// `MessagingError`s.

import { Client } from "wasi:messaging/types@0.2.0-draft";
import { send as witSend } from "wasi:messaging/producer@0.2.0-draft";
import {
  completeMessage,
  abandonMessage,
  updateGuestConfiguration,
} from "wasi:messaging/consumer@0.2.0-draft";
import { getEnvironment } from "wasi:cli/environment@0.2.3";

/** Metadata key of the host-issued delivery id. */
export const DELIVERY_ID = "courier-delivery-id";
/** Metadata key of the delivery attempt, on a redelivery only (none: the first delivery). */
export const ATTEMPT = "courier-attempt";

/** An error of the messaging interface; `payload` is its WIT variant. */
export class MessagingError extends Error {
  constructor(payload, text) {
    super(text);
    this.name = new.target.name;
    // Thrown from the handler, `payload` becomes the handler's `error`.
    this.payload = payload;
  }

  /** `unauthorized`, `timeout`, `connection:…` or `other:…`. */
  describe() {
    const { tag, val } = this.payload;
    return val === undefined ? tag : `${tag}:${val}`;
  }
}

/** The guest is not allowed to do this (a channel outside its grant, ...). */
export class Unauthorized extends MessagingError {
  constructor() {
    super({ tag: "unauthorized" }, "unauthorized");
  }
}

/** The request or operation timed out. */
export class Timeout extends MessagingError {
  constructor() {
    super({ tag: "timeout" }, "timeout");
  }
}

/** An error with the connection to the broker, or no such client. */
export class ConnectionError extends MessagingError {
  constructor(detail) {
    super({ tag: "connection", val: String(detail) }, String(detail));
  }
}

/** Any other error; thrown from a handler, it rejects the batch with its text. */
export class OtherError extends MessagingError {
  constructor(detail) {
    super({ tag: "other", val: String(detail) }, String(detail));
  }
}

/** The typed error for what a host call threw. */
function typed(e) {
  const p = e && e.payload;
  if (!p || typeof p.tag !== "string") {
    return e;
  }
  switch (p.tag) {
    case "unauthorized":
      return new Unauthorized();
    case "timeout":
      return new Timeout();
    case "connection":
      return new ConnectionError(p.val);
    default:
      return new OtherError(p.val);
  }
}

function call(f) {
  try {
    return f();
  } catch (e) {
    throw typed(e);
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * A message on `topic` with `data` (a string is encoded as UTF-8) and, in
 * `options`, `contentType`, `replyTo` and `metadata` (`[key, value]` pairs).
 */
export function message(topic, data, options = {}) {
  return {
    topic,
    contentType: options.contentType ?? undefined,
    replyTo: options.replyTo ?? undefined,
    data: typeof data === "string" ? encoder.encode(data) : data,
    metadata: options.metadata ?? undefined,
  };
}

/** The first metadata value of `key` in message `m`. */
export function meta(m, key) {
  const pair = (m.metadata ?? []).find(([k]) => k === key);
  return pair ? pair[1] : undefined;
}

/** The host-issued delivery id of a received message. */
export function deliveryId(m) {
  return meta(m, DELIVERY_ID);
}

/** The delivery attempt of a received message (1 for the first delivery). */
export function attempt(m) {
  const n = Number.parseInt(meta(m, ATTEMPT) ?? "1", 10);
  return Number.isNaN(n) ? 1 : n;
}

/** The data of message `m` as text (UTF-8; invalid bytes replaced). */
export function text(m) {
  return decoder.decode(m.data);
}

/**
 * Sends `messages` through `client` (the default one when empty). A
 * non-empty `channel` overrides each message's topic.
 */
export function send(channel, messages, client = "") {
  const c = call(() => Client.connect(client));
  // `send` takes the client (an owned handle): nothing is left to close.
  call(() => witSend(c, channel, messages));
}

/** Accepts a received message now. */
export function complete(m) {
  call(() => completeMessage(m));
}

/** Rejects a received message: redelivered later, or dead-lettered. */
export function abandon(m) {
  call(() => abandonMessage(m));
}

/** Replaces the guest's subscriptions with `channels` (`extensions`: an object). */
export function subscribe(channels, extensions = {}) {
  const pairs = Object.entries(extensions);
  call(() =>
    updateGuestConfiguration({
      channels,
      extensions: pairs.length ? pairs : undefined,
    }),
  );
}

let environment;

/**
 * The value of environment variable `name` (set in the guest's config under
 * `env`), or `fallback`. Read when first asked, not while the component is
 * built (componentize-js runs the module's top level at build time).
 */
export function env(name, fallback) {
  environment ??= new Map(getEnvironment());
  return environment.get(name) ?? fallback;
}

/** The `guest` export for a handler of a batch of messages. */
export function handler(fn) {
  return {
    handler(messages) {
      fn(messages);
    },
  };
}
