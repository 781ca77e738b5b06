//! The IRCv3 capabilities the gateway offers, and the set a connection negotiated.

/// One capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    Notify,
    ServerTime,
    MessageTags,
    EchoMessage,
    Batch,
    LabeledResponse,
    AccountTag,
    ChatHistory,
    ReadMarker,
    Multiline,
    Sasl,
}

/// Every capability with its name, in the order `CAP LS` lists them.
pub const ALL: [(Cap, &str); 11] = [
    (Cap::Notify, "cap-notify"),
    (Cap::ServerTime, "server-time"),
    (Cap::MessageTags, "message-tags"),
    (Cap::EchoMessage, "echo-message"),
    (Cap::Batch, "batch"),
    (Cap::LabeledResponse, "labeled-response"),
    (Cap::AccountTag, "account-tag"),
    (Cap::ChatHistory, "draft/chathistory"),
    (Cap::ReadMarker, "draft/read-marker"),
    (Cap::Multiline, "draft/multiline"),
    (Cap::Sasl, "sasl"),
];

impl Cap {
    /// The capability called `name`, if offered.
    pub fn named(name: &str) -> Option<Cap> {
        ALL.iter().find(|(_, n)| *n == name).map(|(c, _)| *c)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// The capabilities a connection has enabled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps(u16);

impl Caps {
    /// Whether `cap` is enabled.
    pub fn has(self, cap: Cap) -> bool {
        self.0 & cap.bit() != 0
    }

    /// Enables or disables `cap`.
    pub fn set(&mut self, cap: Cap, on: bool) {
        if on {
            self.0 |= cap.bit();
        } else {
            self.0 &= !cap.bit();
        }
    }

    /// The names of the enabled capabilities.
    pub fn names(self) -> Vec<&'static str> {
        ALL.iter()
            .filter(|(c, _)| self.has(*c))
            .map(|(_, n)| *n)
            .collect()
    }

    /// Whether a tag may be written to this connection.
    pub fn allows_tag(self, key: &str) -> bool {
        match key {
            "time" => self.has(Cap::ServerTime),
            "account" => self.has(Cap::AccountTag),
            "batch" => self.has(Cap::Batch),
            "label" => self.has(Cap::LabeledResponse),
            "draft/multiline-concat" => self.has(Cap::Multiline),
            // msgid and client tags travel with message-tags.
            _ => self.has(Cap::MessageTags),
        }
    }
}

/// Parses a `CAP REQ` list: the changes, or `None` if any capability is unknown (the whole
/// request is then refused, as the specification requires).
pub fn parse_request(list: &str) -> Option<Vec<(Cap, bool)>> {
    list.split(' ')
        .filter(|s| !s.is_empty())
        .map(|item| match item.strip_prefix('-') {
            Some(name) => Cap::named(name).map(|c| (c, false)),
            None => Cap::named(item).map(|c| (c, true)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_all_or_nothing() {
        let req = parse_request("server-time -echo-message sasl").unwrap();
        assert_eq!(
            req,
            [
                (Cap::ServerTime, true),
                (Cap::EchoMessage, false),
                (Cap::Sasl, true)
            ]
        );
        assert!(parse_request("server-time away-notify").is_none());
        let mut caps = Caps::default();
        caps.set(Cap::Batch, true);
        caps.set(Cap::ServerTime, true);
        caps.set(Cap::ServerTime, false);
        assert_eq!(caps.names(), ["batch"]);
        assert!(caps.allows_tag("batch") && !caps.allows_tag("time") && !caps.allows_tag("msgid"));
    }
}
