//! The core's refusals by the room rules in the gateway's words: the text after a numeric's
//! parameters. The numeric itself is chosen where the command is answered (the same refusal
//! is `482` to a KICK and `404` to a PRIVMSG). This is the only place IRC makes that text.

use crate::core::{RoomAction, RoomRefusal};

/// The trailing text of a numeric for a refusal by the room rules.
pub(super) fn room_text(r: &RoomRefusal) -> String {
    match r {
        RoomRefusal::UnknownRoom { .. } => "No such channel".to_string(),
        RoomRefusal::RoomExists { room } => format!("Channel #{room} already exists"),
        RoomRefusal::NotMember { .. } => "You're not on that channel".to_string(),
        RoomRefusal::UserNotMember { user, .. } => format!("{user} isn't on that channel"),
        RoomRefusal::AlreadyMember { .. } => "You're already on that channel".to_string(),
        RoomRefusal::UserAlreadyMember { user, .. } => {
            format!("{user} is already on that channel")
        }
        RoomRefusal::Forbidden { action, room } => match action {
            RoomAction::Invite => {
                format!("You're not channel operator: only the owner of #{room} can invite")
            }
            RoomAction::Kick => {
                format!("You're not channel operator: only the owner of #{room} can kick")
            }
            RoomAction::KickOwner => format!("The owner of #{room} cannot be kicked"),
            RoomAction::Delete => {
                format!("You're not channel operator: only the owner of #{room} can DROP it")
            }
            RoomAction::JoinPrivate => {
                "Cannot join channel (+i): its owner must INVITE you".to_string()
            }
            RoomAction::LeaveAsOwner => {
                format!("The owner cannot PART #{room} while others are members; DROP it instead")
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_rules_say_what_to_do() {
        let forbidden = |action| RoomRefusal::Forbidden {
            action,
            room: "ops".into(),
        };
        assert!(room_text(&forbidden(RoomAction::Delete)).contains("only the owner of #ops"));
        assert!(room_text(&forbidden(RoomAction::LeaveAsOwner)).contains("DROP it instead"));
        let text = room_text(&RoomRefusal::UserAlreadyMember {
            room: "ops".into(),
            user: "bob".into(),
        });
        assert_eq!(text, "bob is already on that channel");
    }
}
