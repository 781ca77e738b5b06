//! Message bodies on PostgreSQL. A body is any UTF-8 text, U+0000 included (the native
//! protocol carries it, SQLite keeps it), but PostgreSQL's `text` cannot hold a zero byte.
//! So a body that contains one is stored escaped, behind a marker: [`MARKER`], then the body
//! with `\` written `\\` and U+0000 written `\0`. A body that happens to begin with the marker
//! is escaped too, so every stored value decodes to exactly the body that was sent. Bodies
//! without U+0000 (all but hostile ones) are stored as they are, and search sees them as sent.

use std::borrow::Cow;

/// What begins an escaped body: a control character no client types, and a word.
pub(super) const MARKER: &str = "\u{1}nul:";

/// The text to store for `body`.
pub(in crate::store) fn encode(body: &str) -> Cow<'_, str> {
    if !body.contains('\0') && !body.starts_with(MARKER) {
        return Cow::Borrowed(body);
    }
    let mut out = String::with_capacity(MARKER.len() + body.len() + 8);
    out.push_str(MARKER);
    for c in body.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The body a stored text holds.
pub(in crate::store) fn decode(stored: String) -> String {
    let Some(escaped) = stored.strip_prefix(MARKER) else {
        return stored;
    };
    let mut out = String::with_capacity(escaped.len());
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('0') => out.push('\0'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_body_round_trips_and_plain_ones_are_stored_as_they_are() {
        for body in [
            "",
            "hello",
            "\0",
            "\0start",
            "a\0b\0\0c",
            "back\\slash \\0 not a nul",
            "\\",
            MARKER,
            "\u{1}nul:looks escaped\\0",
            "\u{1}",
            "émoji 🎉 \u{202e} \u{1b}[2J",
        ] {
            let stored = encode(body);
            assert!(!stored.contains('\0'), "{body:?} stored with a zero byte");
            assert_eq!(decode(stored.clone().into_owned()), body, "{body:?}");
            if !body.contains('\0') && !body.starts_with(MARKER) {
                assert!(matches!(stored, Cow::Borrowed(_)), "{body:?} was rewritten");
            }
        }
    }
}
