//! Reading, with the caller's permissions: names to users and rooms, the one rule for
//! which conversations a user may read and whose members they may see, history pages,
//! search, room lists, read markers and unread counts. Every front end asks here; none
//! checks a permission itself.
//!
//! The rules: any direct conversation with an existing user is readable (the store limits
//! it to messages the reader sent or received); a room is readable by its current members
//! only (the store limits history to their membership spans); a public room's members are
//! visible to everyone, a private room's to its members only.

use super::refusal::{CoreError, Refusal};
use super::ServerState;
use crate::auth::AuthedUser;
use crate::ids::MessageId;
use crate::protocol::{
    Conversation, MemberInfo, Message, RoomInfo, RoomName, SearchHit, UnreadInfo, Username,
};
use crate::store::{HistoryScope, RoomRef, UserRef};

/// Most words of a search query that are used.
pub const MAX_SEARCH_WORDS: usize = 16;

/// A conversation the caller may read.
#[derive(Debug, Clone)]
pub struct Readable {
    /// Its name (`bob`, `#room`).
    pub conversation: Conversation,
    pub(crate) scope: HistoryScope,
}

/// Where a history page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// The newest messages.
    Latest,
    /// The newest messages with ids below this one.
    Before(MessageId),
    /// The oldest messages with ids above this one.
    After(MessageId),
}

/// A page of history, oldest first.
#[derive(Debug)]
pub struct Page {
    pub messages: Vec<Message>,
    /// More messages lie beyond the page in its direction.
    pub more: bool,
}

impl ServerState {
    /// The live account called `name`.
    pub async fn user_named(&self, name: &str) -> Result<UserRef, CoreError> {
        let parsed = Username::parse(name).map_err(|problem| Refusal::BadUserName {
            name: name.to_string(),
            problem,
        })?;
        self.find_user(&parsed).await?.ok_or_else(|| {
            CoreError::Refused(Refusal::UnknownUser {
                name: parsed.as_str().to_string(),
            })
        })
    }

    /// The live room called `name` (`#room` or `room`).
    pub async fn room_named(&self, name: &str) -> Result<RoomRef, CoreError> {
        let parsed = RoomName::parse(name).map_err(|problem| Refusal::BadRoomName {
            name: name.to_string(),
            problem,
        })?;
        self.find_room(&parsed).await?.ok_or_else(|| {
            CoreError::Refused(Refusal::UnknownRoom {
                name: parsed.to_string(),
            })
        })
    }

    /// The conversation `name` (`bob` or `#room`) if `user` may read it.
    pub async fn readable(&self, user: &AuthedUser, name: &str) -> Result<Readable, CoreError> {
        if !name.starts_with('#') {
            let peer = self.user_named(name).await?;
            return Ok(Readable {
                conversation: Conversation::User(peer.name),
                scope: HistoryScope::Direct { peer_id: peer.id },
            });
        }
        let room = self.room_named(name).await?;
        if !self.store.is_member(room.id, user.user_id()).await? {
            return Err(Refusal::NotMember {
                room: room.name.to_string(),
            }
            .into());
        }
        Ok(Readable {
            conversation: Conversation::Room(room.name),
            scope: HistoryScope::Room { room_id: room.id },
        })
    }

    /// Whether `user` may see who is in `room`: anyone for a public room, members only for
    /// a private one.
    pub async fn may_see_members(
        &self,
        user: &AuthedUser,
        room: &RoomRef,
    ) -> Result<bool, CoreError> {
        Ok(!room.private || self.store.is_member(room.id, user.user_id()).await?)
    }

    /// The members of `room` (by name), if `user` may see them.
    pub async fn members(
        &self,
        user: &AuthedUser,
        room: &str,
    ) -> Result<(RoomRef, Vec<MemberInfo>), CoreError> {
        let room = self.room_named(room).await?;
        if !self.may_see_members(user, &room).await? {
            return Err(Refusal::MembersHidden {
                room: room.name.to_string(),
            }
            .into());
        }
        let members = self.store.room_members(&room).await?;
        Ok((room, members))
    }

    /// The rooms `user` is in, and with `all` also every public room.
    pub async fn rooms(&self, user: &AuthedUser, all: bool) -> Result<Vec<RoomInfo>, CoreError> {
        Ok(self.store.room_list(user.user_id(), all).await?)
    }

    /// A page of `conversation`'s history, at most `limit` messages.
    pub async fn history(
        &self,
        user: &AuthedUser,
        conversation: &Readable,
        range: Range,
        limit: u32,
    ) -> Result<Page, CoreError> {
        if limit == 0 {
            return Err(Refusal::ZeroLimit.into());
        }
        let limit = limit.min(crate::protocol::MAX_HISTORY_PAGE);
        let (before, after) = match range {
            Range::Latest => (None, None),
            Range::Before(id) => (Some(id), None),
            Range::After(id) => (None, Some(id)),
        };
        let (messages, more) = self
            .store
            .history(user.user_id(), conversation.scope, before, after, limit)
            .await?;
        Ok(Page { messages, more })
    }

    /// Messages `user` may read that contain every word of `query` (only letters and
    /// digits count; no query syntax reaches the index), newest first.
    pub async fn search(
        &self,
        user: &AuthedUser,
        query: &str,
        within: Option<&Readable>,
        limit: u32,
    ) -> Result<Vec<SearchHit>, CoreError> {
        let terms: Vec<String> = query
            .split(|c: char| !c.is_alphanumeric())
            .filter(|t| !t.is_empty())
            .take(MAX_SEARCH_WORDS)
            .map(str::to_string)
            .collect();
        if terms.is_empty() {
            return Err(Refusal::NoSearchWords.into());
        }
        let limit = limit.clamp(1, crate::protocol::MAX_SEARCH_RESULTS);
        Ok(self
            .store
            .search(user.user_id(), &terms, within.map(|r| r.scope), limit)
            .await?)
    }

    /// The id of the newest message of `conversation` that `user` may read (0 if none).
    pub async fn latest_id(
        &self,
        user: &AuthedUser,
        conversation: &Readable,
    ) -> Result<MessageId, CoreError> {
        Ok(self
            .store
            .latest_id(user.user_id(), conversation.scope)
            .await?
            .unwrap_or_default())
    }

    /// Moves `user`'s read marker of `conversation` forward to `upto` (its newest message
    /// when `None`), never past the newest message and never back. Returns where it is now.
    pub async fn mark_read(
        &self,
        user: &AuthedUser,
        conversation: &Readable,
        upto: Option<MessageId>,
    ) -> Result<MessageId, CoreError> {
        let latest = self.latest_id(user, conversation).await?;
        let upto = upto.unwrap_or(latest).min(latest);
        Ok(self
            .store
            .set_read_marker(user.user_id(), &conversation.conversation.to_string(), upto)
            .await?)
    }

    /// `user`'s read marker of `conversation`, if set.
    pub async fn read_marker(
        &self,
        user: &AuthedUser,
        conversation: &Readable,
    ) -> Result<Option<MessageId>, CoreError> {
        Ok(self
            .store
            .read_marker(user.user_id(), &conversation.conversation.to_string())
            .await?)
    }

    /// Unread counts of every conversation of `user` with unread messages.
    pub async fn unread(&self, user: &AuthedUser) -> Result<Vec<UnreadInfo>, CoreError> {
        Ok(self.store.unread(user.user_id()).await?)
    }

    /// When message `id` was sent (µs since the epoch), if it exists.
    pub async fn sent_at(&self, id: MessageId) -> Result<Option<i64>, CoreError> {
        Ok(self.store.sent_at(id).await?)
    }

    /// The last message id sent at or before `micros`: how a time names a point in a
    /// conversation.
    pub async fn last_id_at(&self, micros: i64) -> Result<MessageId, CoreError> {
        Ok(self.store.last_id_at(micros).await?)
    }
}
