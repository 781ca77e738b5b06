//! The multi-line input editor: a string and a cursor, with the usual editing moves.
//!
//! It knows nothing about keys or the terminal; [`super::state`] maps keys to these methods
//! and [`super::render`] wraps the text to the box it is drawn in. The cursor is a byte
//! offset that always sits on a character boundary.

/// Text being typed, and where the cursor is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Editor {
    text: String,
    cursor: usize,
}

impl Editor {
    /// The whole text, newlines included.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The cursor as a byte offset into [`Editor::text`].
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// True when nothing has been typed.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// The cursor as (line, column in characters), both from 0.
    pub fn cursor_line_col(&self) -> (usize, usize) {
        let before = &self.text[..self.cursor];
        let line = before.matches('\n').count();
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count())
    }

    /// Inserts one character at the cursor (`\r` becomes `\n`).
    pub fn insert_char(&mut self, c: char) {
        let c = if c == '\r' { '\n' } else { c };
        self.text.insert(self.cursor, c);
        self.cursor += c.len_utf8();
    }

    /// Inserts text at the cursor; `\r\n` and lone `\r` (as terminals paste) become `\n`.
    pub fn insert_str(&mut self, s: &str) {
        let clean = s.replace("\r\n", "\n").replace('\r', "\n");
        self.text.insert_str(self.cursor, &clean);
        self.cursor += clean.len();
    }

    /// Removes and returns the text, leaving the editor empty.
    pub fn take(&mut self) -> String {
        self.cursor = 0;
        std::mem::take(&mut self.text)
    }

    /// Replaces the text and puts the cursor at its end.
    pub fn set(&mut self, text: &str) {
        self.text = text.to_string();
        self.cursor = self.text.len();
    }

    /// Deletes the character before the cursor.
    pub fn backspace(&mut self) {
        if let Some(c) = self.text[..self.cursor].chars().next_back() {
            self.cursor -= c.len_utf8();
            self.text.remove(self.cursor);
        }
    }

    /// Deletes the character under the cursor.
    pub fn delete(&mut self) {
        if self.cursor < self.text.len() {
            self.text.remove(self.cursor);
        }
    }

    /// One character left.
    pub fn left(&mut self) {
        if let Some(c) = self.text[..self.cursor].chars().next_back() {
            self.cursor -= c.len_utf8();
        }
    }

    /// One character right.
    pub fn right(&mut self) {
        if let Some(c) = self.text[self.cursor..].chars().next() {
            self.cursor += c.len_utf8();
        }
    }

    /// To the start of the current line.
    pub fn home(&mut self) {
        self.cursor = self.line_start();
    }

    /// To the end of the current line.
    pub fn end(&mut self) {
        self.cursor = self.line_end();
    }

    /// Up one line, keeping the column where the line is long enough. Returns false on the
    /// first line (nothing moved).
    pub fn up(&mut self) -> bool {
        let (line, col) = self.cursor_line_col();
        if line == 0 {
            return false;
        }
        self.cursor = self.offset_of(line - 1, col);
        true
    }

    /// Down one line; returns false on the last line.
    pub fn down(&mut self) -> bool {
        let (line, col) = self.cursor_line_col();
        if line + 1 >= self.text.split('\n').count() {
            return false;
        }
        self.cursor = self.offset_of(line + 1, col);
        true
    }

    /// To the start of the previous word.
    pub fn word_left(&mut self) {
        self.cursor = self.previous_word_start();
    }

    /// To the end of the next word.
    pub fn word_right(&mut self) {
        let rest = &self.text[self.cursor..];
        let mut seen_word = false;
        let mut offset = rest.len();
        for (i, c) in rest.char_indices() {
            if c.is_alphanumeric() {
                seen_word = true;
            } else if seen_word {
                offset = i;
                break;
            }
        }
        self.cursor += offset;
    }

    /// Deletes from the start of the previous word to the cursor (Ctrl-W).
    pub fn delete_word_back(&mut self) {
        let start = self.previous_word_start();
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
    }

    /// Deletes from the start of the line to the cursor (Ctrl-U); at a line start, joins
    /// with the previous line.
    pub fn kill_to_line_start(&mut self) {
        let start = self.line_start();
        if start == self.cursor {
            self.backspace();
        } else {
            self.text.replace_range(start..self.cursor, "");
            self.cursor = start;
        }
    }

    /// Deletes from the cursor to the end of the line (Ctrl-K); at a line end, joins with
    /// the next line.
    pub fn kill_to_line_end(&mut self) {
        let end = self.line_end();
        if end == self.cursor {
            self.delete();
        } else {
            self.text.replace_range(self.cursor..end, "");
        }
    }

    fn line_start(&self) -> usize {
        self.text[..self.cursor].rfind('\n').map_or(0, |i| i + 1)
    }

    fn line_end(&self) -> usize {
        self.text[self.cursor..]
            .find('\n')
            .map_or(self.text.len(), |i| self.cursor + i)
    }

    fn previous_word_start(&self) -> usize {
        let before = &self.text[..self.cursor];
        let mut start = 0;
        let mut seen_word = false;
        for (i, c) in before.char_indices().rev() {
            if c.is_alphanumeric() {
                seen_word = true;
            } else if seen_word {
                start = i + c.len_utf8();
                break;
            }
        }
        start
    }

    /// Byte offset of (line, col), with col clamped to the line's length.
    fn offset_of(&self, line: usize, col: usize) -> usize {
        let mut offset = 0;
        for (i, text) in self.text.split('\n').enumerate() {
            if i == line {
                let within = text.char_indices().nth(col).map_or(text.len(), |(b, _)| b);
                return offset + within;
            }
            offset += text.len() + 1;
        }
        self.text.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(s: &str) -> Editor {
        let mut e = Editor::default();
        for c in s.chars() {
            e.insert_char(c);
        }
        e
    }

    #[test]
    fn typing_and_deleting_keep_the_cursor_on_char_boundaries() {
        let mut e = typed("héllo wörld");
        e.backspace();
        assert_eq!(e.text(), "héllo wörl");
        e.word_left();
        assert_eq!(e.cursor_line_col(), (0, 6));
        e.left();
        e.left();
        e.delete();
        assert_eq!(e.text(), "héll wörl");
        e.home();
        e.right();
        e.right();
        e.insert_char('é');
        assert_eq!(e.text(), "hééll wörl");
        e.end();
        e.delete_word_back();
        assert_eq!(e.text(), "hééll ");
    }

    #[test]
    fn multi_line_moves_keep_the_column() {
        let mut e = typed("first line\nab\nthird line");
        assert_eq!(e.cursor_line_col(), (2, 10));
        assert!(e.up());
        assert_eq!(e.cursor_line_col(), (1, 2));
        assert!(e.up());
        assert_eq!(e.cursor_line_col(), (0, 2));
        assert!(!e.up());
        e.end();
        assert!(e.down());
        assert_eq!(e.cursor_line_col(), (1, 2));
        e.kill_to_line_start();
        assert_eq!(e.text(), "first line\n\nthird line");
        e.kill_to_line_start();
        assert_eq!(e.text(), "first line\nthird line");
        e.kill_to_line_end();
        assert_eq!(e.text(), "first linethird line");
        e.kill_to_line_end();
        assert_eq!(e.text(), "first line");
        assert!(!e.down());
    }

    #[test]
    fn pasted_line_endings_become_newlines() {
        let mut e = typed("> ");
        e.insert_str("a\r\nb\rc\n");
        assert_eq!(e.text(), "> a\nb\nc\n");
        assert_eq!(e.cursor_line_col(), (3, 0));
        assert_eq!(e.take(), "> a\nb\nc\n");
        assert!(e.is_empty());
    }
}
