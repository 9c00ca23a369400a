// `uppercase`: sends each message's data upper-cased to its `reply-to`, or
// to the channel `out` (or the one in the guest's `OUT` environment
// variable), keeping its content type and metadata. The same behaviour as
// the Rust `uppercase` guest, so the same tests apply; the Rust guest's
// `DELAY_MS` is not read (JavaScript here has no blocking sleep).

import { env, handler, message, send, text } from "../../courier/index.js";

export const guest = handler((messages) => {
  const out = env("OUT", "out");
  // One send per destination, in arrival order within each.
  const byDestination = new Map();
  for (const m of messages) {
    const to = m.replyTo ?? out;
    const metadata = (m.metadata ?? []).filter(([k]) => !k.startsWith("courier-"));
    const upper = message(to, text(m).toUpperCase(), {
      contentType: m.contentType,
      metadata: metadata.length ? metadata : undefined,
    });
    if (!byDestination.has(to)) {
      byDestination.set(to, []);
    }
    byDestination.get(to).push(upper);
  }
  for (const to of [...byDestination.keys()].sort()) {
    send(to, byDestination.get(to));
  }
});
