//! Room membership changes a user asks for: create, join, invite, leave, kick, delete. Names
//! are resolved here; whether the change is allowed (owner rules, private rooms, who is a
//! member) is decided by the writer against the membership in force at that point of the
//! room's history, and a refusal comes back as [`Refusal::Room`](super::refusal::Refusal).

use super::refusal::{CoreError, MemberAction, Refusal};
use super::ServerState;
use crate::auth::AuthedUser;
use crate::ids::MessageId;
use crate::protocol::RoomName;
use crate::store::{RoomChange, RoomRef};

/// A membership change, with the room and user by name.
#[derive(Debug, Clone)]
pub enum RoomRequest {
    /// Create a room owned by the caller.
    Create { room: String, private: bool },
    /// Join a public room.
    Join { room: String },
    /// Join the room, or create it (public) when no room has the name: IRC's `JOIN`.
    JoinOrCreate { room: String },
    /// The owner adds `user`.
    Invite { room: String, user: String },
    /// Leave (the owner alone in the room deletes it).
    Leave { room: String },
    /// The owner removes `user`.
    Kick { room: String, user: String },
    /// The owner deletes the room.
    Delete { room: String },
}

/// A change that was stored.
#[derive(Debug, Clone)]
pub struct RoomChanged {
    /// `#room`, as stored.
    pub room: String,
    /// The id of the membership event in the room's history.
    pub event_id: MessageId,
    /// The user the change was about (invite, kick), as stored.
    pub user: Option<String>,
}

impl ServerState {
    /// Applies a membership change asked for by `user`.
    pub async fn change_membership(
        &self,
        user: &AuthedUser,
        request: RoomRequest,
    ) -> Result<RoomChanged, CoreError> {
        let by = (user.user_id(), user.name().to_string());
        let (change, room, who) = match request {
            RoomRequest::Create { room, private } => {
                let name = self.new_room_name(&room)?;
                let change = RoomChange::Create {
                    name: name.as_str().to_string(),
                    private,
                    by,
                };
                (change, name.to_string(), None)
            }
            RoomRequest::JoinOrCreate { room } => {
                let name = self.new_room_name(&room)?;
                match self.find_room(&name).await? {
                    Some(r) => (
                        RoomChange::Join { room_id: r.id, by },
                        r.name.to_string(),
                        None,
                    ),
                    None => (
                        RoomChange::Create {
                            name: name.as_str().to_string(),
                            private: false,
                            by,
                        },
                        name.to_string(),
                        None,
                    ),
                }
            }
            RoomRequest::Join { room } => {
                let r = self.room_named(&room).await?;
                let display = r.name.to_string();
                (RoomChange::Join { room_id: r.id, by }, display, None)
            }
            RoomRequest::Leave { room } => {
                let r = self.room_named(&room).await?;
                let display = r.name.to_string();
                (RoomChange::Leave { room_id: r.id, by }, display, None)
            }
            RoomRequest::Delete { room } => {
                let r = self.room_named(&room).await?;
                let display = r.name.to_string();
                (RoomChange::Delete { room_id: r.id, by }, display, None)
            }
            RoomRequest::Invite { room, user: who } => {
                self.about_member(user, &room, &who, MemberAction::Invite)
                    .await?
            }
            RoomRequest::Kick { room, user: who } => {
                self.about_member(user, &room, &who, MemberAction::Kick)
                    .await?
            }
        };
        let (_, event_id) = self.change_room(change).await?;
        Ok(RoomChanged {
            room,
            event_id,
            user: who,
        })
    }

    /// The change for an invite or a kick of `who` from `room` by `user`: its room, and
    /// the user it is about, as stored.
    async fn about_member(
        &self,
        user: &AuthedUser,
        room: &str,
        who: &str,
        action: MemberAction,
    ) -> Result<(RoomChange, String, Option<String>), CoreError> {
        let r = self.room_named(room).await?;
        self.must_be_inside(user, &r, action).await?;
        let who = self.user_named(who).await?;
        let (room_id, by) = (r.id, (user.user_id(), user.name().to_string()));
        let name = who.name.to_string();
        let user = (who.id, name.clone());
        let change = match action {
            MemberAction::Invite => RoomChange::Invite { room_id, by, user },
            MemberAction::Kick => RoomChange::Kick { room_id, by, user },
        };
        Ok((change, r.name.to_string(), Some(name)))
    }

    /// Refuses an invite or kick by someone who is not in the room at all (before the
    /// user it names is looked up, so a stranger learns nothing about the room's members).
    async fn must_be_inside(
        &self,
        user: &AuthedUser,
        room: &RoomRef,
        action: MemberAction,
    ) -> Result<(), CoreError> {
        if self.store.is_member(room.id, user.user_id()).await? {
            return Ok(());
        }
        Err(Refusal::OutsideRoom {
            room: room.name.to_string(),
            action,
        }
        .into())
    }

    /// A name for a new room, or why it cannot be one.
    fn new_room_name(&self, room: &str) -> Result<RoomName, CoreError> {
        RoomName::parse(room).map_err(|problem| {
            CoreError::Refused(Refusal::BadRoomName {
                name: room.to_string(),
                problem,
            })
        })
    }
}
