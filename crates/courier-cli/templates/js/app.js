// `{{name}}`: sends each message's data upper-cased to the channel `out`.

import { handler, message, send, text } from "./courier/index.js";

export const guest = handler((messages) => {
  send("out", messages.map((m) => message("out", text(m).toUpperCase())));
});
