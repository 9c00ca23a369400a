// `flaky`: settles messages itself. A message whose data starts with
// `abandon` is abandoned, `fail` fails the batch (an error: the batch is
// redelivered), `trap` throws an exception that is not a messaging error
// (the instance traps and is replaced); any other message is forwarded to
// `out` (or the channel in the guest's `OUT` environment variable) and
// completed. The same behaviour as the Rust `flaky` guest, so the
// same tests apply.

import { OtherError, abandon, complete, env, handler, message, send, text } from "../../courier/index.js";

export const guest = handler((messages) => {
  const out = env("OUT", "out");
  for (const m of messages) {
    const data = text(m);
    if (data.startsWith("abandon")) {
      abandon(m);
    } else if (data.startsWith("fail")) {
      throw new OtherError(`flaky: failed on ${data}`);
    } else if (data.startsWith("trap")) {
      throw new Error(`flaky: trapping on ${data}`);
    } else {
      send(out, [message(out, m.data)]);
      complete(m);
    }
  }
});
