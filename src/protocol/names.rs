//! Validated names. A [`Username`], [`RoomName`] or [`Conversation`] can only be built by its
//! parser, so code that holds one never checks the syntax again.

use std::fmt;
use std::str::FromStr;

/// Longest user name, in characters.
pub const MAX_USERNAME_LEN: usize = 32;

/// A user name: 1 to 32 characters from `a-z`, `0-9`, `_`, `-` and `.`, starting with a
/// letter or digit. Input is case-insensitive: it is folded to lower case when parsed, so
/// `Alice` and `alice` are the same account.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(String);

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("user name is empty")]
    Empty,
    #[error("user name is longer than {MAX_USERNAME_LEN} characters")]
    TooLong,
    #[error("user name must start with a letter or digit")]
    BadStart,
    #[error("user name may only contain a-z, 0-9, '_', '-' and '.' (found {0:?})")]
    BadChar(char),
}

impl Username {
    /// Parses and normalises a user name.
    pub fn parse(input: &str) -> Result<Self, NameError> {
        if input.is_empty() {
            return Err(NameError::Empty);
        }
        if input.chars().count() > MAX_USERNAME_LEN {
            return Err(NameError::TooLong);
        }
        let lower = input.to_ascii_lowercase();
        for c in lower.chars() {
            if !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.')) {
                return Err(NameError::BadChar(c));
            }
        }
        let first = lower.as_bytes()[0];
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(NameError::BadStart);
        }
        Ok(Username(lower))
    }

    /// The normalised name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A name read back from the database. The store wrote it only after [`Username::parse`]
    /// accepted it, so it is not checked again; nothing else may build a name this way.
    pub(crate) fn from_stored(name: String) -> Self {
        Username(name)
    }
}

impl FromStr for Username {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Username::parse(s)
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Username({})", self.0)
    }
}

/// Longest room name, in characters (without the leading `#`).
pub const MAX_ROOM_NAME_LEN: usize = 32;

/// A room name: written `#name` where a peer is accepted; `name` is 1 to 32 characters from
/// `a-z`, `0-9`, `_` and `-`, starting with a letter or digit, case-insensitive (folded to
/// lower case). [`RoomName::as_str`] is the name without `#`; `Display` adds it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(String);

/// Why a room name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomNameError {
    #[error("room name is empty")]
    Empty,
    #[error("room name is longer than {MAX_ROOM_NAME_LEN} characters")]
    TooLong,
    #[error("room name must start with a letter or digit")]
    BadStart,
    #[error("room name may only contain a-z, 0-9, '_' and '-' (found {0:?})")]
    BadChar(char),
}

impl RoomName {
    /// Parses a room name, with or without its leading `#`.
    pub fn parse(input: &str) -> Result<Self, RoomNameError> {
        let bare = input.strip_prefix('#').unwrap_or(input);
        if bare.is_empty() {
            return Err(RoomNameError::Empty);
        }
        if bare.chars().count() > MAX_ROOM_NAME_LEN {
            return Err(RoomNameError::TooLong);
        }
        let lower = bare.to_ascii_lowercase();
        for c in lower.chars() {
            if !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-')) {
                return Err(RoomNameError::BadChar(c));
            }
        }
        let first = lower.as_bytes()[0];
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(RoomNameError::BadStart);
        }
        Ok(RoomName(lower))
    }

    /// The normalised name without `#`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A room name (without `#`) read back from the database. The store wrote it only after
    /// [`RoomName::parse`] accepted it, so it is not checked again; nothing else may build a
    /// name this way.
    pub(crate) fn from_stored(name: String) -> Self {
        RoomName(name)
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl fmt::Debug for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoomName(#{})", self.0)
    }
}

/// Where a message goes or a history is read: a user (`bob`) or a room (`#ops`).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Conversation {
    User(Username),
    Room(RoomName),
}

/// Why a conversation name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversationError {
    #[error(transparent)]
    User(#[from] NameError),
    #[error(transparent)]
    Room(#[from] RoomNameError),
}

impl Conversation {
    /// `#name` is a room; anything else a user name.
    pub fn parse(input: &str) -> Result<Self, ConversationError> {
        if input.starts_with('#') {
            Ok(Conversation::Room(RoomName::parse(input)?))
        } else {
            Ok(Conversation::User(Username::parse(input)?))
        }
    }
}

impl fmt::Display for Conversation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conversation::User(u) => fmt::Display::fmt(u, f),
            Conversation::Room(r) => fmt::Display::fmt(r, f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fold_case_and_keep_allowed_characters() {
        assert_eq!(Username::parse("Alice").unwrap().as_str(), "alice");
        assert_eq!(Username::parse("b.o_b-9").unwrap().as_str(), "b.o_b-9");
        assert_eq!(Username::parse("7up").unwrap().as_str(), "7up");
    }

    #[test]
    fn bad_names_are_refused_with_the_reason() {
        assert_eq!(Username::parse(""), Err(NameError::Empty));
        assert_eq!(Username::parse("_x"), Err(NameError::BadStart));
        assert_eq!(Username::parse("a b"), Err(NameError::BadChar(' ')));
        // A Cyrillic 'а' that looks like a Latin 'a' is not accepted.
        assert_eq!(
            Username::parse("\u{430}lice"),
            Err(NameError::BadChar('\u{430}'))
        );
        assert_eq!(Username::parse(&"a".repeat(33)), Err(NameError::TooLong));
        assert!(Username::parse(&"a".repeat(32)).is_ok());
    }

    #[test]
    fn rooms_and_conversations_parse() {
        assert_eq!(RoomName::parse("#Ops").unwrap().as_str(), "ops");
        assert_eq!(RoomName::parse("ops").unwrap().to_string(), "#ops");
        assert_eq!(RoomName::parse("#"), Err(RoomNameError::Empty));
        assert_eq!(RoomName::parse("#a.b"), Err(RoomNameError::BadChar('.')));
        assert_eq!(RoomName::parse("#-x"), Err(RoomNameError::BadStart));
        assert!(matches!(
            Conversation::parse("#ops").unwrap(),
            Conversation::Room(_)
        ));
        assert!(matches!(
            Conversation::parse("Bob").unwrap(),
            Conversation::User(_)
        ));
        assert!(Conversation::parse("#bad room").is_err());
    }
}
