//! The session's conversation requests: room membership changes, member and room lists,
//! history pages, search, read markers and unread counts. Each is one call on the core
//! ([`crate::core`]), which resolves names and checks every permission; this module only
//! turns the answer into frames (and keeps pages and results within one frame).

use super::{End, Session};
use crate::auth::AuthedUser;
use crate::core::{CoreError, Range, RoomRequest};
use crate::ids::MessageId;
use crate::native::refusals::error_frame;
use crate::protocol::codec::encode_json;
use crate::protocol::{ErrorCode, Message, ServerFrame, DEFAULT_HISTORY_PAGE, MAX_FRAME_LEN};

/// Default number of search results (the largest is
/// [`MAX_SEARCH_RESULTS`](crate::protocol::MAX_SEARCH_RESULTS)).
pub const DEFAULT_SEARCH_RESULTS: u32 = 20;

impl Session {
    /// Answers a refusal or failure of the core.
    async fn core_error(&mut self, req: u64, e: CoreError) -> Result<(), End> {
        self.write(&error_frame(req, &e, "internal server error"))
            .await
    }

    pub(super) async fn room_change(
        &mut self,
        req: u64,
        user: &AuthedUser,
        request: RoomRequest,
    ) -> Result<(), End> {
        match self.state.change_membership(user, request).await {
            Ok(changed) => {
                self.write(&ServerFrame::RoomOk {
                    req,
                    room: changed.room,
                    event_id: Some(changed.event_id.get()),
                })
                .await
            }
            Err(e) => self.core_error(req, e).await,
        }
    }

    pub(super) async fn room_list(
        &mut self,
        req: u64,
        user: &AuthedUser,
        all: bool,
    ) -> Result<(), End> {
        match self.state.rooms(user, all).await {
            Ok(rooms) => self.write(&ServerFrame::Rooms { req, rooms }).await,
            Err(e) => self.core_error(req, e).await,
        }
    }

    pub(super) async fn room_members(
        &mut self,
        req: u64,
        user: &AuthedUser,
        room: &str,
    ) -> Result<(), End> {
        match self.state.members(user, room).await {
            Ok((room, members)) => {
                self.write(&ServerFrame::Members {
                    req,
                    room: room.name.to_string(),
                    members,
                })
                .await
            }
            Err(e) => self.core_error(req, e).await,
        }
    }

    pub(super) async fn history(
        &mut self,
        req: u64,
        user: &AuthedUser,
        peer: &str,
        before: Option<MessageId>,
        after: Option<MessageId>,
        limit: Option<u32>,
    ) -> Result<(), End> {
        let range = match (before, after) {
            (Some(_), Some(_)) => {
                return self
                    .reply_error(req, ErrorCode::BadRequest, "give before or after, not both")
                    .await
            }
            (Some(id), None) => Range::Before(id),
            (None, Some(id)) => Range::After(id),
            (None, None) => Range::Latest,
        };
        let limit = limit.unwrap_or(DEFAULT_HISTORY_PAGE);
        let page = match self.state.readable(user, peer).await {
            Ok(conversation) => self.state.history(user, &conversation, range, limit).await,
            Err(e) => Err(e),
        };
        let (mut messages, mut more) = match page {
            Ok(page) => (page.messages, page.more),
            Err(e) => return self.core_error(req, e).await,
        };
        // Keep the page within one frame: drop the messages farthest from the anchor (they
        // come with the next page).
        let kept = fit_in_frame(&messages, after.is_some());
        if kept < messages.len() {
            if after.is_some() {
                messages.truncate(kept);
            } else {
                messages.drain(..messages.len() - kept);
            }
            more = true;
        }
        self.write(&ServerFrame::History {
            req,
            messages,
            more,
        })
        .await
    }

    pub(super) async fn search(
        &mut self,
        req: u64,
        user: &AuthedUser,
        query: &str,
        within: Option<&str>,
        limit: Option<u32>,
    ) -> Result<(), End> {
        let scope = match within {
            None => None,
            Some(name) => match self.state.readable(user, name).await {
                Ok(r) => Some(r),
                Err(e) => return self.core_error(req, e).await,
            },
        };
        let limit = limit.unwrap_or(DEFAULT_SEARCH_RESULTS);
        match self.state.search(user, query, scope.as_ref(), limit).await {
            Ok(mut results) => {
                let mut budget = MAX_FRAME_LEN - 1024;
                results.retain(|hit| {
                    let size = encode_json(hit).len() + 1;
                    let fits = size <= budget;
                    budget = budget.saturating_sub(size);
                    fits
                });
                self.write(&ServerFrame::SearchResults { req, results })
                    .await
            }
            Err(e) => self.core_error(req, e).await,
        }
    }

    pub(super) async fn read(
        &mut self,
        req: u64,
        user: &AuthedUser,
        conversation: &str,
        upto: Option<MessageId>,
    ) -> Result<(), End> {
        let readable = match self.state.readable(user, conversation).await {
            Ok(r) => r,
            Err(e) => return self.core_error(req, e).await,
        };
        match self.state.mark_read(user, &readable, upto).await {
            Ok(now) => {
                let key = readable.conversation.to_string();
                let conn = self.guard.as_ref().map_or(0, |g| g.conn_id());
                let notice = crate::core::hub::ReadMarker {
                    conversation: key.clone(),
                    upto: now,
                };
                self.state.hub.notify_user(user.user_id(), conn, notice);
                self.write(&ServerFrame::ReadOk {
                    req,
                    conversation: key,
                    upto: now.get(),
                })
                .await
            }
            Err(e) => self.core_error(req, e).await,
        }
    }

    pub(super) async fn unread(&mut self, req: u64, user: &AuthedUser) -> Result<(), End> {
        match self.state.unread(user).await {
            Ok(conversations) => {
                self.write(&ServerFrame::Unread { req, conversations })
                    .await
            }
            Err(e) => self.core_error(req, e).await,
        }
    }
}

/// How many messages of a page fit in one frame, counting from the anchor end: from the
/// start when paging forward (`after`), from the end otherwise.
fn fit_in_frame(messages: &[Message], forward: bool) -> usize {
    let mut budget = MAX_FRAME_LEN - 1024;
    let mut keep = 0;
    let mut sizes = messages.iter().map(|m| encode_json(m).len() + 1);
    let mut take = |size: usize| {
        if size > budget {
            return false;
        }
        budget -= size;
        keep += 1;
        true
    };
    if forward {
        for size in sizes.by_ref() {
            if !take(size) {
                break;
            }
        }
    } else {
        for size in sizes.rev() {
            if !take(size) {
                break;
            }
        }
    }
    keep
}
