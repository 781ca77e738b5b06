//! The session's conversation requests: resolving `bob` / `#room` with the caller's
//! permissions, room membership changes, history pages, search, read markers and unread
//! counts. Every permission is checked here, on the server, against the store or the writer.

use super::{End, Session};
use crate::auth::AuthedUser;
use crate::protocol::codec::encode_json;
use crate::protocol::{
    Conversation, ErrorCode, Message, RoomName, ServerFrame, Username, DEFAULT_HISTORY_PAGE,
    MAX_FRAME_LEN, MAX_HISTORY_PAGE,
};
use crate::store::{HistoryScope, RoomChange, RoomRef, StoreError, Target};

/// Default number of search results (the largest is [`MAX_SEARCH_RESULTS`]).
pub const DEFAULT_SEARCH_RESULTS: u32 = 20;
pub use crate::protocol::MAX_SEARCH_RESULTS;

/// A membership change asked for by the connection's user.
pub(super) enum RoomOp {
    Join,
    Leave,
    Delete,
    Invite(String),
    Kick(String),
}

/// The error code for a store refusal the client caused (as opposed to a server failure).
pub(super) fn refusal_code(e: &StoreError) -> Option<ErrorCode> {
    Some(match e {
        StoreError::UnknownRoom(_) => ErrorCode::UnknownRoom,
        StoreError::RoomExists(_) => ErrorCode::RoomExists,
        StoreError::NotMember(_) => ErrorCode::NotMember,
        StoreError::AlreadyMember(_) => ErrorCode::BadRequest,
        StoreError::Forbidden(_) => ErrorCode::Forbidden,
        _ => return None,
    })
}

impl Session {
    /// Answers a store error: the refusal's own code and text, or `internal`.
    async fn store_error(&mut self, req: u64, e: StoreError) -> Result<(), End> {
        match refusal_code(&e) {
            Some(code) => self.reply_error(req, code, e.to_string()).await,
            None => self.internal(req, &e).await,
        }
    }

    /// Looks up a user by name; answers with an error and returns `None` if there is none.
    async fn find_user(&mut self, req: u64, name: &str) -> Result<Option<(i64, String)>, End> {
        let name = match Username::parse(name) {
            Ok(n) => n,
            Err(e) => {
                self.reply_error(req, ErrorCode::InvalidName, e.to_string())
                    .await?;
                return Ok(None);
            }
        };
        match self.state.find_user(&name).await {
            Ok(Some(u)) => Ok(Some((u.id, u.name))),
            Ok(None) => {
                self.reply_error(
                    req,
                    ErrorCode::UnknownRecipient,
                    format!("no such user: {name}"),
                )
                .await?;
                Ok(None)
            }
            Err(e) => {
                self.internal(req, &e).await?;
                Ok(None)
            }
        }
    }

    /// Looks up a room by name; answers with an error and returns `None` if there is none.
    async fn find_room(&mut self, req: u64, name: &str) -> Result<Option<RoomRef>, End> {
        let name = match RoomName::parse(name) {
            Ok(n) => n,
            Err(e) => {
                self.reply_error(req, ErrorCode::InvalidName, e.to_string())
                    .await?;
                return Ok(None);
            }
        };
        match self.state.find_room(&name).await {
            Ok(Some(r)) => Ok(Some(r)),
            Ok(None) => {
                self.reply_error(req, ErrorCode::UnknownRoom, format!("no such room: {name}"))
                    .await?;
                Ok(None)
            }
            Err(e) => {
                self.internal(req, &e).await?;
                Ok(None)
            }
        }
    }

    /// Resolves where a `send` goes. Room membership is checked by the writer at commit.
    pub(super) async fn resolve_target(
        &mut self,
        req: u64,
        to: &str,
    ) -> Result<Option<Target>, End> {
        if to.starts_with('#') {
            Ok(self
                .find_room(req, to)
                .await?
                .map(|r| Target::Room(r.id, r.name)))
        } else {
            Ok(self
                .find_user(req, to)
                .await?
                .map(|(id, name)| Target::User(id, name)))
        }
    }

    /// Resolves a conversation the caller wants to read: any user, or a room the caller is
    /// currently a member of. Answers with an error and returns `None` otherwise.
    async fn readable(
        &mut self,
        req: u64,
        user: &AuthedUser,
        name: &str,
    ) -> Result<Option<(Conversation, HistoryScope)>, End> {
        if !name.starts_with('#') {
            let Some((peer_id, peer)) = self.find_user(req, name).await? else {
                return Ok(None);
            };
            let Ok(peer) = Username::parse(&peer) else {
                return Ok(None);
            };
            return Ok(Some((
                Conversation::User(peer),
                HistoryScope::Direct { peer_id },
            )));
        }
        let Some(room) = self.find_room(req, name).await? else {
            return Ok(None);
        };
        match self.state.store.is_member(room.id, user.user_id()).await {
            Ok(true) => {}
            Ok(false) => {
                self.reply_error(
                    req,
                    ErrorCode::NotMember,
                    format!("you are not a member of #{}", room.name),
                )
                .await?;
                return Ok(None);
            }
            Err(e) => {
                self.internal(req, &e).await?;
                return Ok(None);
            }
        }
        let Ok(name) = RoomName::parse(&room.name) else {
            return Ok(None);
        };
        Ok(Some((
            Conversation::Room(name),
            HistoryScope::Room { room_id: room.id },
        )))
    }

    pub(super) async fn room_create(
        &mut self,
        req: u64,
        user: &AuthedUser,
        room: &str,
        private: bool,
    ) -> Result<(), End> {
        let name = match RoomName::parse(room) {
            Ok(n) => n,
            Err(e) => {
                return self
                    .reply_error(req, ErrorCode::InvalidName, e.to_string())
                    .await
            }
        };
        let change = RoomChange::Create {
            name: name.as_str().to_string(),
            private,
            by: (user.user_id(), user.name().to_string()),
        };
        match self.state.writer.change_room(change).await {
            Ok((_, event_id)) => {
                self.write(&ServerFrame::RoomOk {
                    req,
                    room: name.to_string(),
                    event_id: Some(event_id),
                })
                .await
            }
            Err(e) => self.store_error(req, e).await,
        }
    }

    pub(super) async fn room_change(
        &mut self,
        req: u64,
        user: &AuthedUser,
        room: &str,
        op: RoomOp,
    ) -> Result<(), End> {
        let Some(room) = self.find_room(req, room).await? else {
            return Ok(());
        };
        let by = (user.user_id(), user.name().to_string());
        let room_id = room.id;
        let change = match op {
            RoomOp::Join => RoomChange::Join { room_id, by },
            RoomOp::Leave => RoomChange::Leave { room_id, by },
            RoomOp::Delete => RoomChange::Delete { room_id, by },
            RoomOp::Invite(who) => {
                let Some(who) = self.find_user(req, &who).await? else {
                    return Ok(());
                };
                RoomChange::Invite {
                    room_id,
                    by,
                    user: who,
                }
            }
            RoomOp::Kick(who) => {
                let Some(who) = self.find_user(req, &who).await? else {
                    return Ok(());
                };
                RoomChange::Kick {
                    room_id,
                    by,
                    user: who,
                }
            }
        };
        match self.state.change_room(change).await {
            Ok((_, event_id)) => {
                self.write(&ServerFrame::RoomOk {
                    req,
                    room: format!("#{}", room.name),
                    event_id: Some(event_id),
                })
                .await
            }
            Err(e) => self.store_error(req, e).await,
        }
    }

    pub(super) async fn room_list(
        &mut self,
        req: u64,
        user: &AuthedUser,
        all: bool,
    ) -> Result<(), End> {
        match self.state.store.room_list(user.user_id(), all).await {
            Ok(rooms) => self.write(&ServerFrame::Rooms { req, rooms }).await,
            Err(e) => self.internal(req, &e).await,
        }
    }

    pub(super) async fn room_members(
        &mut self,
        req: u64,
        user: &AuthedUser,
        room: &str,
    ) -> Result<(), End> {
        let Some(room) = self.find_room(req, room).await? else {
            return Ok(());
        };
        if room.private {
            match self.state.store.is_member(room.id, user.user_id()).await {
                Ok(true) => {}
                Ok(false) => {
                    return self
                        .reply_error(
                            req,
                            ErrorCode::NotMember,
                            format!("#{} is private and you are not a member", room.name),
                        )
                        .await
                }
                Err(e) => return self.internal(req, &e).await,
            }
        }
        match self.state.store.room_members(&room).await {
            Ok(members) => {
                self.write(&ServerFrame::Members {
                    req,
                    room: format!("#{}", room.name),
                    members,
                })
                .await
            }
            Err(e) => self.internal(req, &e).await,
        }
    }

    pub(super) async fn history(
        &mut self,
        req: u64,
        user: &AuthedUser,
        peer: &str,
        before: Option<i64>,
        after: Option<i64>,
        limit: Option<u32>,
    ) -> Result<(), End> {
        let limit = limit.unwrap_or(DEFAULT_HISTORY_PAGE);
        if limit == 0 {
            return self
                .reply_error(req, ErrorCode::BadRequest, "limit must be at least 1")
                .await;
        }
        if before.is_some() && after.is_some() {
            return self
                .reply_error(req, ErrorCode::BadRequest, "give before or after, not both")
                .await;
        }
        let limit = limit.min(MAX_HISTORY_PAGE);
        let Some((_, scope)) = self.readable(req, user, peer).await? else {
            return Ok(());
        };
        match self
            .state
            .store
            .history(user.user_id(), scope, before, after, limit)
            .await
        {
            Ok((mut messages, mut more)) => {
                // Keep the page within one frame: drop the messages farthest from the anchor
                // (they come with the next page).
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
            Err(e) => self.internal(req, &e).await,
        }
    }

    pub(super) async fn search(
        &mut self,
        req: u64,
        user: &AuthedUser,
        query: &str,
        within: Option<&str>,
        limit: Option<u32>,
    ) -> Result<(), End> {
        let terms: Vec<String> = query
            .split(|c: char| !c.is_alphanumeric())
            .filter(|t| !t.is_empty())
            .take(16)
            .map(str::to_string)
            .collect();
        if terms.is_empty() {
            return self
                .reply_error(
                    req,
                    ErrorCode::BadRequest,
                    "the search needs at least one word",
                )
                .await;
        }
        let limit = limit
            .unwrap_or(DEFAULT_SEARCH_RESULTS)
            .clamp(1, MAX_SEARCH_RESULTS);
        let scope = match within {
            None => None,
            Some(name) => match self.readable(req, user, name).await? {
                Some((_, scope)) => Some(scope),
                None => return Ok(()),
            },
        };
        match self
            .state
            .store
            .search(user.user_id(), &terms, scope, limit)
            .await
        {
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
            Err(e) => self.internal(req, &e).await,
        }
    }

    pub(super) async fn read(
        &mut self,
        req: u64,
        user: &AuthedUser,
        conversation: &str,
        upto: Option<i64>,
    ) -> Result<(), End> {
        let Some((conv, scope)) = self.readable(req, user, conversation).await? else {
            return Ok(());
        };
        let latest = match self.state.store.latest_id(user.user_id(), scope).await {
            Ok(id) => id.unwrap_or(0),
            Err(e) => return self.internal(req, &e).await,
        };
        // A marker never points past the conversation's newest message.
        let upto = upto.unwrap_or(latest).min(latest);
        let key = conv.to_string();
        match self
            .state
            .store
            .set_read_marker(user.user_id(), &key, upto)
            .await
        {
            Ok(now) => {
                let conn = self.guard.as_ref().map_or(0, |g| g.conn_id());
                let notice = crate::core::hub::ReadMarker {
                    conversation: key.clone(),
                    upto: now,
                };
                self.state.hub.notify_user(user.user_id(), conn, notice);
                self.write(&ServerFrame::ReadOk {
                    req,
                    conversation: key,
                    upto: now,
                })
                .await
            }
            Err(e) => self.internal(req, &e).await,
        }
    }

    pub(super) async fn unread(&mut self, req: u64, user: &AuthedUser) -> Result<(), End> {
        match self.state.store.unread(user.user_id()).await {
            Ok(conversations) => {
                self.write(&ServerFrame::Unread { req, conversations })
                    .await
            }
            Err(e) => self.internal(req, &e).await,
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
