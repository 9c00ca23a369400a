//! Finding where in the file a key stands, for errors found after `serde`
//! has read the file (a backend's options, checks across keys).

use std::ops::Range;

/// The 1-based line of byte `offset` in `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The line of `key = ...` inside the table at `span` of `text` (an inline
/// table, or a `[header]` and the lines up to the next header); the table's
/// first line when the key is not found there.
pub(crate) fn line_of_key(text: &str, span: Range<usize>, key: &str) -> usize {
    let start = span.start.min(text.len());
    let mut end = span.end.min(text.len()).max(start);
    if !text[start..].starts_with('{') {
        // A header's span may cover the header alone: its keys follow it.
        let body = text[start..].find('\n').map_or(text.len(), |n| start + n);
        end = text[body..]
            .find("\n[")
            .map_or(text.len(), |n| body + n)
            .max(end);
    }
    let within = &text[start..end];
    // `subjects[1]` stands in the file as `subjects`.
    let key = key.split(['[', '.']).next().unwrap_or(key);
    if !key.is_empty() {
        for (at, _) in within.match_indices(key) {
            let before = within[..at].chars().next_back();
            let after = within[at + key.len()..].trim_start_matches(['"', '\'', ' ', '\t']);
            let starts = before.is_none_or(|c| c.is_whitespace() || "{,\"'".contains(c));
            if starts && after.starts_with('=') {
                return line_of(text, start + at);
            }
        }
    }
    line_of(text, start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_in_tables_and_inline_tables() {
        let text = "[a]\nx = 1\n[a.options]\nstream = 2\njetstream = \"yes\"\n";
        let span = text.find("stream").unwrap()..text.len();
        assert_eq!(line_of_key(text, span.clone(), "jetstream"), 5);
        assert_eq!(line_of_key(text, span.clone(), "stream"), 4);
        assert_eq!(line_of_key(text, span, "nope"), 4);
        let text = "[a]\noptions = { jetstream = true, \"subjects\" = 3 }\n";
        let span = text.find('{').unwrap()..text.len();
        assert_eq!(line_of_key(text, span, "subjects[0]"), 2);
    }
}
