//! IRC messages: parsing a client line and serialising a server line, with IRCv3 tags.
//!
//! This module knows the text form only (`@tags :source COMMAND params :trailing`); what a
//! command means is decided in the session. Parsing never fails on content it does not
//! understand: a line without a command is the only refusal.

use std::fmt::Write as _;

/// One IRC message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IrcMessage {
    /// IRCv3 tags, in order, with their unescaped values.
    pub tags: Vec<(String, Option<String>)>,
    /// The source (`nick!user@host` or the server name), without `:`.
    pub source: Option<String>,
    /// The command, upper-cased (or a three-digit numeric).
    pub command: String,
    /// Parameters; the last may contain spaces.
    pub params: Vec<String>,
}

impl IrcMessage {
    /// A message with a command and parameters, without tags or source.
    pub fn new(command: &str, params: impl IntoIterator<Item = impl Into<String>>) -> Self {
        IrcMessage {
            tags: Vec::new(),
            source: None,
            command: command.to_string(),
            params: params.into_iter().map(Into::into).collect(),
        }
    }

    /// Sets the source.
    pub fn from_source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, key: &str, value: impl Into<String>) -> Self {
        self.tags.push((key.to_string(), Some(value.into())));
        self
    }

    /// The value of a tag, if present (a tag without a value reads as "").
    pub fn tag_value(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    /// Parameter `i`, if present.
    pub fn param(&self, i: usize) -> Option<&str> {
        self.params.get(i).map(String::as_str)
    }

    /// Parses one line (without its line ending). `None` when there is no command.
    pub fn parse(line: &str) -> Option<IrcMessage> {
        let mut rest = line.trim_start_matches(' ');
        let mut tags = Vec::new();
        if let Some(after) = rest.strip_prefix('@') {
            let (raw, tail) = after.split_once(' ').unwrap_or((after, ""));
            for item in raw.split(';').filter(|t| !t.is_empty()) {
                // `key=` and `key` are the same tag (an empty value); a tag without a key
                // means nothing and is dropped.
                let (key, value) = item.split_once('=').unwrap_or((item, ""));
                if key.is_empty() {
                    continue;
                }
                let value = Some(unescape_tag(value)).filter(|v| !v.is_empty());
                tags.push((key.to_string(), value));
            }
            rest = tail.trim_start_matches(' ');
        }
        let mut source = None;
        if let Some(after) = rest.strip_prefix(':') {
            let (s, tail) = after.split_once(' ').unwrap_or((after, ""));
            source = Some(s.to_string());
            rest = tail.trim_start_matches(' ');
        }
        let (command, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
        // A second `@` where the command belongs is not a command (and would read as tags).
        if command.is_empty() || command.starts_with('@') {
            return None;
        }
        let mut params = Vec::new();
        loop {
            rest = rest.trim_start_matches(' ');
            if rest.is_empty() {
                break;
            }
            if let Some(trailing) = rest.strip_prefix(':') {
                params.push(trailing.to_string());
                break;
            }
            let (p, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            params.push(p.to_string());
            rest = tail;
        }
        Some(IrcMessage {
            tags,
            source,
            command: command.to_ascii_uppercase(),
            params,
        })
    }

    /// The line, without its line ending. The last parameter is written as a trailing
    /// parameter when it needs to be (empty, contains a space, or starts with `:`).
    pub fn to_line(&self) -> String {
        let mut out = String::new();
        if !self.tags.is_empty() {
            out.push('@');
            for (i, (k, v)) in self.tags.iter().enumerate() {
                if i > 0 {
                    out.push(';');
                }
                out.push_str(k);
                if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                    out.push('=');
                    escape_tag(v, &mut out);
                }
            }
            out.push(' ');
        }
        if let Some(s) = &self.source {
            let _ = write!(out, ":{s} ");
        }
        out.push_str(&self.command);
        let last = self.params.len().saturating_sub(1);
        for (i, p) in self.params.iter().enumerate() {
            out.push(' ');
            if i == last && (p.is_empty() || p.contains(' ') || p.starts_with(':')) {
                out.push(':');
            }
            out.push_str(p);
        }
        out
    }
}

fn unescape_tag(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(':') => out.push(';'),
            Some('s') => out.push(' '),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

fn escape_tag(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            ';' => out.push_str("\\:"),
            ' ' => out.push_str("\\s"),
            '\\' => out.push_str("\\\\"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tags_source_and_trailing() {
        let m = IrcMessage::parse(r"@label=a\sb;+draft/x :nick!u@h privmsg #room :hello  there")
            .unwrap();
        assert_eq!(m.tag_value("label"), Some("a b"));
        assert_eq!(m.tag_value("+draft/x"), Some(""));
        assert_eq!(m.source.as_deref(), Some("nick!u@h"));
        assert_eq!(m.command, "PRIVMSG");
        assert_eq!(m.params, ["#room", "hello  there"]);
        assert_eq!(
            IrcMessage::parse("NICK   alice  ").unwrap().params,
            ["alice"]
        );
        assert!(IrcMessage::parse("").is_none());
        assert!(IrcMessage::parse("@a=b ").is_none());
        assert!(IrcMessage::parse("@  @label=a CMD").is_none());
        // Found by fuzzing: a keyless tag must not survive to be written as `@ `.
        let keyless = IrcMessage::parse(r"@=;=x;k=;e=\ CMD a").unwrap();
        assert_eq!(
            keyless.tags,
            [("k".to_string(), None), ("e".to_string(), None)]
        );
        assert_eq!(IrcMessage::parse(&keyless.to_line()), Some(keyless));
    }

    #[test]
    fn serialises_with_escaped_tags_and_trailing_when_needed() {
        let m = IrcMessage::new("PRIVMSG", ["#a", "hi there"])
            .from_source("bob!bob@chatd")
            .tag("time", "2024-01-01T00:00:00.000Z")
            .tag("label", "x;y z\\");
        assert_eq!(
            m.to_line(),
            r"@time=2024-01-01T00:00:00.000Z;label=x\:y\sz\\ :bob!bob@chatd PRIVMSG #a :hi there"
        );
        assert_eq!(IrcMessage::new("PING", ["x"]).to_line(), "PING x");
        assert_eq!(IrcMessage::new("X", [":a"]).to_line(), "X ::a");
        assert_eq!(IrcMessage::new("X", [""]).to_line(), "X :");
        let back = IrcMessage::parse(&m.to_line()).unwrap();
        assert_eq!(back, m);
    }
}
