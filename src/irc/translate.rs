//! From the core to IRC: a stored [`Message`] as the IRC lines a client sees, and IRC
//! timestamps to and from the core's.
//!
//! A text message becomes PRIVMSG lines from the sender's nick to the channel or nick; its
//! id is the `msgid` tag, its server time the `time` tag and the sender the `account` tag
//! (each written only where the client negotiated it). A body with several lines, or one
//! too long for one IRC line, is one `draft/multiline` batch where negotiated, otherwise
//! consecutive PRIVMSGs (the msgid on the first). An action is CTCP ACTION lines. Long lines
//! are split at a word boundary near the limit, else on a character boundary, never inside
//! a UTF-8 sequence. Membership events become JOIN, PART, KICK and INVITE; a deleted room is
//! a KICK of each member by the server.

use super::caps::{Cap, Caps};
use super::message::IrcMessage;
use super::{LINELEN, USER_HOST};
use crate::protocol::{Message, MessageKind};

/// `nick!nick@chatd`: every user's IRC source.
pub fn source_of(nick: &str) -> String {
    format!("{nick}!{nick}@{USER_HOST}")
}

/// The server time of a message as IRC writes it: RFC 3339 with milliseconds.
pub fn irc_time(sent_at: &str) -> String {
    // The core writes microseconds (`…:SS.ffffffZ`); IRC clients expect milliseconds.
    match sent_at.split_once('.') {
        Some((secs, frac)) if frac.len() >= 4 => format!("{secs}.{}Z", &frac[..3]),
        _ => sent_at.to_string(),
    }
}

/// Microseconds since the epoch of an IRC timestamp (RFC 3339), if it is one.
pub fn parse_time(text: &str) -> Option<i64> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1000).ok()
}

/// The lines showing `message` to `me`. `next_batch` numbers batch references.
pub fn message_lines(
    message: &Message,
    me: &str,
    server: &str,
    caps: Caps,
    next_batch: &mut u64,
) -> Vec<IrcMessage> {
    let from = source_of(&message.from);
    let target = message.to.as_str();
    let tagged = |m: IrcMessage| {
        m.tag("time", irc_time(&message.sent_at))
            .tag("account", message.from.clone())
    };
    let event = |command: &str, params: Vec<String>| {
        vec![tagged(IrcMessage::new(command, params).from_source(&from))
            .tag("msgid", message.id.to_string())]
    };
    let member = message.member.clone().unwrap_or_default();
    match message.kind {
        MessageKind::Text if message.action => action_lines(message, &from, tagged),
        MessageKind::Text => text_lines(message, &from, caps, next_batch, tagged),
        // The room is gone: the server removes every member.
        MessageKind::Delete => {
            vec![
                tagged(IrcMessage::new("KICK", [target, me, ROOM_DELETED]).from_source(server))
                    .tag("msgid", message.id.to_string()),
            ]
        }
        MessageKind::Create | MessageKind::Join => event("JOIN", vec![target.to_string()]),
        MessageKind::Leave => event("PART", vec![target.to_string()]),
        MessageKind::Kick => event(
            "KICK",
            vec![
                target.to_string(),
                member.clone(),
                format!("removed by {}", message.from),
            ],
        ),
        MessageKind::Invite => {
            // An invitation adds the member at once: they join.
            let mut lines = Vec::new();
            if member == me {
                lines.extend(event("INVITE", vec![member.clone(), target.to_string()]));
            }
            lines.push(
                tagged(IrcMessage::new("JOIN", [target]).from_source(source_of(&member)))
                    .tag("msgid", message.id.to_string()),
            );
            lines
        }
    }
}

/// The reason of the server's KICK when a room is deleted.
pub const ROOM_DELETED: &str = "Room deleted";

/// An action as CTCP ACTION lines (`\x01ACTION waves\x01`), one PRIVMSG per line of the
/// body or piece of an over-long one, never a multiline batch (CTCP is one line); the
/// msgid on the first.
fn action_lines(
    message: &Message,
    from: &str,
    tagged: impl Fn(IrcMessage) -> IrcMessage,
) -> Vec<IrcMessage> {
    let target = message.to.as_str();
    // As for text, less the CTCP wrapping (`\x01ACTION ` and `\x01`).
    let budget = LINELEN.saturating_sub(2 + from.len() + target.len() + 13 + 9);
    let body = message.body.replace(['\r', '\0', '\u{1}'], "\u{FFFD}");
    let body = body.strip_suffix('\n').unwrap_or(&body);
    let mut out = Vec::new();
    for line in body.split('\n') {
        for piece in split_words(line, budget) {
            let text = format!("\u{1}ACTION {piece}\u{1}");
            let line =
                tagged(IrcMessage::new("PRIVMSG", [target.to_string(), text]).from_source(from));
            out.push(if out.is_empty() {
                line.tag("msgid", message.id.to_string())
            } else {
                line
            });
        }
    }
    out
}

fn text_lines(
    message: &Message,
    from: &str,
    caps: Caps,
    next_batch: &mut u64,
    tagged: impl Fn(IrcMessage) -> IrcMessage,
) -> Vec<IrcMessage> {
    let target = message.to.as_str();
    // `:source PRIVMSG target :` and CRLF come out of the line's budget.
    let budget = LINELEN.saturating_sub(2 + from.len() + target.len() + 13);
    let body = message.body.replace(['\r', '\0'], "\u{FFFD}");
    let mut pieces: Vec<(String, bool)> = Vec::new();
    for line in body.split('\n') {
        let chunks = split_words(line, budget);
        for (i, chunk) in chunks.into_iter().enumerate() {
            pieces.push((chunk, i > 0));
        }
    }
    let msgid = message.id.to_string();
    let privmsg =
        |text: String| IrcMessage::new("PRIVMSG", [target.to_string(), text]).from_source(from);
    if pieces.len() == 1 {
        let (text, _) = pieces.remove(0);
        return vec![tagged(privmsg(text)).tag("msgid", msgid)];
    }
    if caps.has(Cap::Multiline) && caps.has(Cap::Batch) {
        *next_batch += 1;
        let reference = format!("ml{next_batch}");
        let mut lines = vec![tagged(
            IrcMessage::new(
                "BATCH",
                [
                    format!("+{reference}"),
                    "draft/multiline".into(),
                    target.into(),
                ],
            )
            .from_source(from),
        )
        .tag("msgid", msgid)];
        for (text, concat) in pieces {
            let mut line = privmsg(text).tag("batch", reference.clone());
            if concat {
                line.tags.push(("draft/multiline-concat".into(), None));
            }
            lines.push(line);
        }
        lines.push(IrcMessage::new("BATCH", [format!("-{reference}")]));
        return lines;
    }
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, (text, _))| {
            // IRC cannot carry an empty line outside a multiline batch.
            let text = if text.is_empty() {
                " ".to_string()
            } else {
                text
            };
            let line = tagged(privmsg(text));
            if i == 0 {
                line.tag("msgid", msgid.clone())
            } else {
                line
            }
        })
        .collect()
}

/// Splits `text` into pieces of at most `max` bytes, each ending on a character boundary
/// (an empty text is one empty piece), and at a word boundary when there is one near the
/// limit: a piece that would end inside a word ends
/// after the last space in its final quarter instead (the space stays at the end of the
/// piece, so the pieces still concatenate to the text). A word longer than that is cut.
pub fn split_words(text: &str, max: usize) -> Vec<String> {
    let max = max.max(4);
    let mut out = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let bytes = rest.as_bytes();
        let inside_word = bytes[cut] != b' ' && bytes[cut - 1] != b' ';
        if inside_word {
            let window = cut - cut / 4;
            if let Some(space) = rest[..cut].rfind(' ').filter(|&i| i >= window) {
                cut = space + 1;
            }
        }
        out.push(rest[..cut].to_string());
        rest = &rest[cut..];
    }
    out.push(rest.to_string());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(body: &str) -> Message {
        Message {
            id: 42,
            from: "bob".into(),
            to: "#ops".into(),
            body: body.into(),
            sent_at: "2026-01-02T03:04:05.678901Z".into(),
            kind: MessageKind::Text,
            member: None,
            action: false,
        }
    }

    #[test]
    fn splits_on_character_boundaries() {
        let s = "aé€😀".repeat(50);
        for max in [4, 5, 6, 7, 100] {
            let parts = split_words(&s, max);
            assert!(parts.iter().all(|p| p.len() <= max), "{max}");
            assert_eq!(parts.concat(), s);
        }
        assert_eq!(split_words("", 10), [""]);
    }

    #[test]
    fn multi_line_messages_are_one_batch_or_consecutive_lines() {
        let all = {
            let mut c = Caps::default();
            for (cap, _) in super::super::caps::ALL {
                c.set(cap, true);
            }
            c
        };
        let mut n = 0;
        let lines = message_lines(&text("one\n\nthree"), "alice", "chatd", all, &mut n);
        let rendered: Vec<String> = lines.iter().map(IrcMessage::to_line).collect();
        assert_eq!(rendered.len(), 5, "{rendered:#?}");
        assert!(rendered[0].starts_with("@time=2026-01-02T03:04:05.678Z;account=bob;msgid=42 :bob!bob@chatd BATCH +ml1 draft/multiline #ops"));
        assert!(rendered[2].ends_with("PRIVMSG #ops :"), "{}", rendered[2]);

        let plain = message_lines(
            &text("one\n\nthree"),
            "alice",
            "chatd",
            Caps::default(),
            &mut n,
        );
        let bodies: Vec<&str> = plain.iter().map(|m| m.params[1].as_str()).collect();
        assert_eq!(bodies, ["one", " ", "three"]);
        assert_eq!(plain[0].tag_value("msgid"), Some("42"));
        assert_eq!(plain[1].tag_value("msgid"), None);
    }

    #[test]
    fn long_lines_fit_the_line_length() {
        let body = "ü".repeat(1000);
        let mut n = 0;
        let lines = message_lines(&text(&body), "alice", "chatd", Caps::default(), &mut n);
        assert!(lines.len() > 1);
        let mut joined = String::new();
        for l in &lines {
            let mut bare = l.clone();
            bare.tags.clear();
            assert!(
                bare.to_line().len() + 2 <= LINELEN,
                "{}",
                bare.to_line().len()
            );
            joined.push_str(&l.params[1]);
        }
        assert_eq!(joined, body);
    }

    #[test]
    fn long_lines_split_at_a_word_boundary_near_the_limit() {
        // A space in the last quarter of the piece: the cut follows it.
        let text = format!("{} {}", "a".repeat(85), "b".repeat(40));
        let parts = split_words(&text, 100);
        assert_eq!(parts, [format!("{} ", "a".repeat(85)), "b".repeat(40)]);
        // The only space is too early: the word is cut at the limit.
        let text = format!("{} {}", "a".repeat(50), "b".repeat(80));
        let parts = split_words(&text, 100);
        assert_eq!(parts[0].len(), 100);
        assert_eq!(parts.concat(), text);
        // Cutting right before a space is already a word boundary.
        let text = format!("{} {}", "a".repeat(100), "b".repeat(10));
        assert_eq!(split_words(&text, 100)[0], "a".repeat(100));
        // Words of several bytes per character stay whole.
        let text = "héllo wörld ".repeat(40);
        for max in [4, 9, 30, 100] {
            let parts = split_words(&text, max);
            assert!(parts.iter().all(|p| p.len() <= max), "{max}");
            assert_eq!(parts.concat(), text);
        }
        let parts = split_words(&text, 100);
        assert!(
            parts[..parts.len() - 1].iter().all(|p| p.ends_with(' ')),
            "{parts:?}"
        );
        assert_eq!(split_words("", 10), [""]);
    }

    #[test]
    fn actions_are_ctcp_action_lines() {
        let mut m = text("waves\nand smiles");
        m.action = true;
        let mut n = 0;
        for caps in [Caps::default(), {
            let mut c = Caps::default();
            c.set(Cap::Multiline, true);
            c.set(Cap::Batch, true);
            c
        }] {
            let lines = message_lines(&m, "alice", "chatd", caps, &mut n);
            let bodies: Vec<&str> = lines.iter().map(|l| l.params[1].as_str()).collect();
            assert_eq!(
                bodies,
                ["\u{1}ACTION waves\u{1}", "\u{1}ACTION and smiles\u{1}"]
            );
            assert!(lines.iter().all(|l| l.command == "PRIVMSG"));
            assert_eq!(lines[0].tag_value("msgid"), Some("42"));
        }
        let long = "word ".repeat(200);
        m.body = long.clone();
        let lines = message_lines(&m, "alice", "chatd", Caps::default(), &mut n);
        assert!(lines.len() > 1);
        let mut joined = String::new();
        for l in &lines {
            let mut bare = l.clone();
            bare.tags.clear();
            assert!(bare.to_line().len() + 2 <= LINELEN, "{}", bare.to_line());
            let inner = l.params[1]
                .strip_prefix("\u{1}ACTION ")
                .and_then(|t| t.strip_suffix('\u{1}'))
                .unwrap();
            joined.push_str(inner);
        }
        assert_eq!(joined, long.trim_end_matches('\n'));
    }

    #[test]
    fn timestamps_round_trip_at_millisecond_precision() {
        assert_eq!(
            irc_time("2026-01-02T03:04:05.678901Z"),
            "2026-01-02T03:04:05.678Z"
        );
        assert_eq!(parse_time("1970-01-01T00:00:01.500Z"), Some(1_500_000));
        assert_eq!(parse_time("yesterday"), None);
    }
}
