//! The core's refusals in the native protocol's words: an `error` frame with its code and a
//! sentence for people. This is the only place the native front end makes refusal text.

use crate::core::{CoreError, MemberAction, Refusal};
use crate::protocol::{ErrorCode, ServerFrame};
use crate::store::StoreError;

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
        Refusal::Room(e) => (room_code(e), e.to_string()),
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

/// The error code of a refusal by the room rules.
fn room_code(e: &StoreError) -> ErrorCode {
    match e {
        StoreError::UnknownRoom(_) => ErrorCode::UnknownRoom,
        StoreError::RoomExists(_) => ErrorCode::RoomExists,
        StoreError::NotMember(_) => ErrorCode::NotMember,
        StoreError::Forbidden(_) => ErrorCode::Forbidden,
        _ => ErrorCode::BadRequest,
    }
}
