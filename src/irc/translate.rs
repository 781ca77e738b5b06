//! From the core to IRC: a stored [`Message`] as the IRC lines a client sees, and IRC
//! timestamps to and from the core's.
//!
//! A text message becomes PRIVMSG lines from the sender's nick to the channel or nick; its
//! id is the `msgid` tag, its server time the `time` tag and the sender the `account` tag
//! (each written only where the client negotiated it). A body with several lines, or one
//! too long for one IRC line, is one `draft/multiline` batch where negotiated, otherwise
//! consecutive PRIVMSGs (the msgid on the first). Long lines are split on character
//! boundaries, never inside a UTF-8 sequence. Membership events become JOIN, PART, KICK and
//! INVITE.

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
        MessageKind::Text => text_lines(message, &from, caps, next_batch, tagged),
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
        let chunks = split_utf8(line, budget);
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

/// Splits `text` into pieces of at most `max` bytes, each ending on a character boundary.
/// An empty text is one empty piece.
pub fn split_utf8(text: &str, max: usize) -> Vec<String> {
    let max = max.max(4);
    let mut out = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
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
        }
    }

    #[test]
    fn splits_on_character_boundaries() {
        let s = "aé€😀".repeat(50);
        for max in [4, 5, 6, 7, 100] {
            let parts = split_utf8(&s, max);
            assert!(parts.iter().all(|p| p.len() <= max), "{max}");
            assert_eq!(parts.concat(), s);
        }
        assert_eq!(split_utf8("", 10), [""]);
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
        let lines = message_lines(&text("one\n\nthree"), "alice", all, &mut n);
        let rendered: Vec<String> = lines.iter().map(IrcMessage::to_line).collect();
        assert_eq!(rendered.len(), 5, "{rendered:#?}");
        assert!(rendered[0].starts_with("@time=2026-01-02T03:04:05.678Z;account=bob;msgid=42 :bob!bob@chatd BATCH +ml1 draft/multiline #ops"));
        assert!(rendered[2].ends_with("PRIVMSG #ops :"), "{}", rendered[2]);

        let plain = message_lines(&text("one\n\nthree"), "alice", Caps::default(), &mut n);
        let bodies: Vec<&str> = plain.iter().map(|m| m.params[1].as_str()).collect();
        assert_eq!(bodies, ["one", " ", "three"]);
        assert_eq!(plain[0].tag_value("msgid"), Some("42"));
        assert_eq!(plain[1].tag_value("msgid"), None);
    }

    #[test]
    fn long_lines_fit_the_line_length() {
        let body = "ü".repeat(1000);
        let mut n = 0;
        let lines = message_lines(&text(&body), "alice", Caps::default(), &mut n);
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
    fn timestamps_round_trip_at_millisecond_precision() {
        assert_eq!(
            irc_time("2026-01-02T03:04:05.678901Z"),
            "2026-01-02T03:04:05.678Z"
        );
        assert_eq!(parse_time("1970-01-01T00:00:01.500Z"), Some(1_500_000));
        assert_eq!(parse_time("yesterday"), None);
    }
}
