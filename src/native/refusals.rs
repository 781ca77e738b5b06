//! The core's refusals in the native protocol's words: an `error` frame with its code and a
//! sentence for people. This is the only place the native front end makes refusal text.

use crate::core::{CoreError, MemberAction, Refusal, RoomAction, RoomRefusal};
use crate::protocol::{ErrorCode, ServerFrame};

/// The frame answering request `req` that the core refused or failed. A server failure is
/// logged and answered with `internal` and `failed` (what the client can do about it).
pub(crate) fn error_frame(req: u64, e: &CoreError, failed: &str) -> ServerFrame {
    match e {
        CoreError::Refused(r) => refusal_frame(req, r),
        CoreError::Internal(e) => {
            tracing::error!(error = %e, "request failed");
            ServerFrame::error(Some(req), ErrorCode::Internal, failed)
        }
    }
}

/// The frame refusing request `req`.
pub(crate) fn refusal_frame(req: u64, r: &Refusal) -> ServerFrame {
    let (code, message) = match r {
        Refusal::RateLimited { retry_after } => {
            let ms = u64::try_from(retry_after.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            return ServerFrame::Error {
                req: Some(req),
                code: ErrorCode::RateLimited,
                message: format!("sending too fast; retry in {ms} ms"),
                retry_after_ms: Some(ms),
            };
        }
        Refusal::BadUserName { problem, .. } => (ErrorCode::InvalidName, problem.to_string()),
        Refusal::BadRoomName { problem, .. } => (ErrorCode::InvalidName, problem.to_string()),
        Refusal::UnknownUser { name } => {
            (ErrorCode::UnknownRecipient, format!("no such user: {name}"))
        }
        Refusal::UnknownRoom { name } => (ErrorCode::UnknownRoom, format!("no such room: {name}")),
        Refusal::NotMember { room } => (
            ErrorCode::NotMember,
            format!("you are not a member of {room}"),
        ),
        Refusal::MembersHidden { room } => (
            ErrorCode::NotMember,
            format!("{room} is private and you are not a member"),
        ),
        Refusal::OutsideRoom { room, action } => (
            ErrorCode::Forbidden,
            match action {
                MemberAction::Invite => format!("only the owner of {room} can invite"),
                MemberAction::Kick => format!("only the owner of {room} can kick"),
            },
        ),
        Refusal::Room(r) => room_refusal(r),
        Refusal::EmptyMessage => (
            ErrorCode::EmptyMessage,
            "the message body is empty (or only whitespace)".to_string(),
        ),
        Refusal::MessageTooLarge { size, max } => (
            ErrorCode::MessageTooLarge,
            format!("the message is {size} bytes; the limit is {max} bytes"),
        ),
        Refusal::BadKey { max } => (
            ErrorCode::BadRequest,
            format!("key must be 1 to {max} bytes without control characters"),
        ),
        Refusal::Revoked => (
            ErrorCode::SessionRevoked,
            "this session was revoked".to_string(),
        ),
        Refusal::ZeroLimit => (
            ErrorCode::BadRequest,
            "limit must be at least 1".to_string(),
        ),
        Refusal::NoSearchWords => (
            ErrorCode::BadRequest,
            "the search needs at least one word".to_string(),
        ),
    };
    ServerFrame::error(Some(req), code, message)
}

/// The code and words of a refusal by the room rules (room names come without `#`).
fn room_refusal(r: &RoomRefusal) -> (ErrorCode, String) {
    match r {
        RoomRefusal::UnknownRoom { room: Some(room) } => {
            (ErrorCode::UnknownRoom, format!("no such room: #{room}"))
        }
        RoomRefusal::UnknownRoom { room: None } => {
            (ErrorCode::UnknownRoom, "no such room: that room".to_string())
        }
        RoomRefusal::RoomExists { room } => {
            (ErrorCode::RoomExists, format!("room #{room} already exists"))
        }
        RoomRefusal::NotMember { room } => (
            ErrorCode::NotMember,
            format!("you are not a member of #{room}"),
        ),
        RoomRefusal::UserNotMember { room, user } => (
            ErrorCode::NotMember,
            format!("{user} is not a member of #{room}"),
        ),
        RoomRefusal::AlreadyMember { room } => (
            ErrorCode::BadRequest,
            format!("you are already a member of #{room}"),
        ),
        RoomRefusal::UserAlreadyMember { room, user } => (
            ErrorCode::BadRequest,
            format!("{user} is already a member of #{room}"),
        ),
        RoomRefusal::Forbidden { action, room } => (
            ErrorCode::Forbidden,
            match action {
                RoomAction::Invite => format!("only the owner of #{room} can invite"),
                RoomAction::Kick => format!("only the owner of #{room} can kick"),
                RoomAction::KickOwner => format!("the owner of #{room} cannot be kicked"),
                RoomAction::Delete => format!("only the owner of #{room} can delete it"),
                RoomAction::JoinPrivate => format!("#{room} is private: its owner must invite you"),
                RoomAction::LeaveAsOwner => format!(
                    "the owner cannot leave #{room} while others are members; delete the room instead"
                ),
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden(action: RoomAction, room: &str) -> RoomRefusal {
        RoomRefusal::Forbidden {
            action,
            room: room.to_string(),
        }
    }

    #[test]
    fn every_room_refusal_has_its_code_and_words() {
        let ops = || "ops".to_string();
        let cases = [
            (
                RoomRefusal::UnknownRoom { room: None },
                ErrorCode::UnknownRoom,
                "no such room: that room",
            ),
            (
                RoomRefusal::UnknownRoom { room: Some(ops()) },
                ErrorCode::UnknownRoom,
                "no such room: #ops",
            ),
            (
                RoomRefusal::RoomExists { room: ops() },
                ErrorCode::RoomExists,
                "room #ops already exists",
            ),
            (
                RoomRefusal::NotMember { room: ops() },
                ErrorCode::NotMember,
                "you are not a member of #ops",
            ),
            (
                RoomRefusal::UserNotMember {
                    room: ops(),
                    user: "bob".into(),
                },
                ErrorCode::NotMember,
                "bob is not a member of #ops",
            ),
            (
                RoomRefusal::AlreadyMember { room: ops() },
                ErrorCode::BadRequest,
                "you are already a member of #ops",
            ),
            (
                RoomRefusal::UserAlreadyMember {
                    room: ops(),
                    user: "bob".into(),
                },
                ErrorCode::BadRequest,
                "bob is already a member of #ops",
            ),
            (
                forbidden(RoomAction::JoinPrivate, "ops"),
                ErrorCode::Forbidden,
                "#ops is private: its owner must invite you",
            ),
            (
                forbidden(RoomAction::Invite, "ops"),
                ErrorCode::Forbidden,
                "only the owner of #ops can invite",
            ),
            (
                forbidden(RoomAction::LeaveAsOwner, "ops"),
                ErrorCode::Forbidden,
                "the owner cannot leave #ops while others are members; delete the room instead",
            ),
            (
                forbidden(RoomAction::Delete, "ops"),
                ErrorCode::Forbidden,
                "only the owner of #ops can delete it",
            ),
            (
                forbidden(RoomAction::Kick, "ops"),
                ErrorCode::Forbidden,
                "only the owner of #ops can kick",
            ),
            (
                forbidden(RoomAction::KickOwner, "ops"),
                ErrorCode::Forbidden,
                "the owner of #ops cannot be kicked",
            ),
        ];
        for (refusal, code, words) in cases {
            match refusal_frame(1, &Refusal::Room(refusal)) {
                ServerFrame::Error {
                    req: Some(1),
                    code: got,
                    message,
                    retry_after_ms: None,
                } => assert_eq!((got, message.as_str()), (code, words)),
                other => panic!("not an error frame: {other:?}"),
            }
        }
    }
}
