//! Typed ids: a user, a device, a room and a message are told apart by type, so a call
//! such as `ack(user, device, upto)` cannot take its arguments in the wrong order. Each is
//! the database's 64-bit id; [`MessageId`]s are also the order of the message stream (a
//! higher id is never visible before a lower one) and are the cursor a device resumes from.
//! On the wire (`protocol`) ids stay plain integers.

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub i64);

        impl $name {
            /// The id as the database and the wire carry it.
            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<$name> for i64 {
            fn from(id: $name) -> i64 {
                id.0
            }
        }
    };
}

id_type!(
    /// An account.
    UserId
);
id_type!(
    /// One login of an account (a `chat login`, a TUI, a named IRC device).
    DeviceId
);
id_type!(
    /// A room.
    RoomId
);
id_type!(
    /// A message or membership event: its place in the one message stream.
    MessageId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_order_and_print_as_their_number() {
        assert!(MessageId(2) > MessageId(1));
        assert_eq!(UserId(7).to_string(), "7");
        assert_eq!(i64::from(DeviceId(9)), 9);
        assert_eq!(RoomId(3).get(), 3);
    }
}
