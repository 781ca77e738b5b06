//! Received text made harmless for a terminal, for `chat` and the TUI alike.
//!
//! Anyone who can message a user chooses bytes that end up on that user's terminal. Escape
//! sequences could retitle or clear it, move the cursor over earlier lines, or worse; bidi
//! controls could make a line read differently from what it contains. [`terminal_safe`]
//! replaces every such character with U+FFFD (`�`), visibly: what was sent is not hidden,
//! only defused. Newlines and tabs are kept; each front end lays them out itself.

use std::borrow::Cow;

/// Shown in place of a character that must not reach a terminal.
pub const REPLACEMENT: char = '\u{FFFD}';

/// True for a character that must never be written to a terminal as is: C0 controls other
/// than newline and tab (escape included), DEL, C1 controls, and the Unicode bidi controls
/// (embeddings, overrides, isolates and marks: the `Bidi_Control` property).
pub fn is_unsafe(c: char) -> bool {
    match c {
        '\n' | '\t' => false,
        // Cc: U+0000–U+001F, U+007F, U+0080–U+009F.
        c if c.is_control() => true,
        '\u{061C}'
        | '\u{200E}'
        | '\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2066}'..='\u{2069}' => true,
        _ => false,
    }
}

/// `text` with every [`is_unsafe`] character replaced by [`REPLACEMENT`]; borrowed when
/// there is none.
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| if is_unsafe(c) { REPLACEMENT } else { c })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_and_bidi_controls_are_replaced_visibly() {
        let hostile =
            "\u{1b}]0;owned\u{7}\u{1b}[2J\r\u{8}\u{7f}\u{9b}31m \u{202e}txt.exe\u{2066}\u{200f}";
        let safe = terminal_safe(hostile);
        assert!(!safe.chars().any(is_unsafe), "{safe:?}");
        assert_eq!(
            safe,
            "\u{FFFD}]0;owned\u{FFFD}\u{FFFD}[2J\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}31m \u{FFFD}txt.exe\u{FFFD}\u{FFFD}"
        );
    }

    #[test]
    fn ordinary_text_is_kept_as_it_is() {
        let text = "line one\n\tindented ünïcödé ✓ 😀 مرحبا";
        assert!(matches!(terminal_safe(text), Cow::Borrowed(t) if t == text));
    }
}
