//! Room membership: the live rooms and their members as the writer keeps them in memory, and
//! the rules that decide every membership change and every send to a room.
//!
//! Everything here is pure: no SQL, no I/O, no `async`. [`Rooms::decide`] takes the current
//! state and a requested [`RoomChange`] and answers with a [`Decision`] (the event to store,
//! the member list after it and who hears of it, or that the room goes) or a typed
//! [`Refusal`]; [`Rooms::may_send`] says whether a user may send to a room at this point of
//! its history. The writer (`writer.rs`) executes a decision (SQL, ids, the commit) and only
//! after the commit calls [`Rooms::apply`], so the state never runs ahead of what is stored.
//!
//! A refusal carries names, never sentences: the front end that shows it chooses the words
//! (`native::refusals`, `irc::refusals`).
//!
//! Room names are the database's to keep unique, not this state's: an operator's
//! `chatd room del` frees a name in the database a moment before the writer re-reads the
//! rooms, and the name must be free at once. So a creation is always allowed here, and the
//! writer turns the unique index's refusal into [`Refusal::RoomExists`].

use std::collections::HashMap;
use std::sync::Arc;

use crate::ids::{RoomId, UserId};
use crate::protocol::MessageKind;

/// A membership change. Each is stored as an event in the room's history.
#[derive(Debug, Clone)]
pub enum RoomChange {
    /// Create a room owned by `by`, who becomes its first member.
    Create {
        name: String,
        private: bool,
        by: (UserId, String),
    },
    /// `by` joins a public room.
    Join {
        room_id: RoomId,
        by: (UserId, String),
    },
    /// `by` (the owner) adds `user`.
    Invite {
        room_id: RoomId,
        by: (UserId, String),
        user: (UserId, String),
    },
    /// `by` leaves. The owner may leave only when alone in the room, which deletes it (as
    /// [`RoomChange::Delete`]).
    Leave {
        room_id: RoomId,
        by: (UserId, String),
    },
    /// `by` (the owner) deletes the room, as the operator's `chatd room del` does.
    Delete {
        room_id: RoomId,
        by: (UserId, String),
    },
    /// `by` (the owner) removes `user`.
    Kick {
        room_id: RoomId,
        by: (UserId, String),
        user: (UserId, String),
    },
}

/// Why a membership change or a send to a room is not allowed. Room names are without `#`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No live room: it never existed or was deleted. `room` is the name the request used,
    /// when it used one (a send does; a change names its room by id).
    UnknownRoom { room: Option<String> },
    /// A live room already has this name.
    RoomExists { room: String },
    /// The requester is not a member (a leave, a send).
    NotMember { room: String },
    /// The user the change names is not a member (a kick).
    UserNotMember { room: String, user: String },
    /// The requester is a member already (a join).
    AlreadyMember { room: String },
    /// The user the change names is a member already (an invite).
    UserAlreadyMember { room: String, user: String },
    /// The requester may not do `action` in this room.
    Forbidden { action: RoomAction, room: String },
}

/// What a [`Refusal::Forbidden`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomAction {
    /// Inviting, which only the owner may do.
    Invite,
    /// Kicking, which only the owner may do.
    Kick,
    /// Kicking the owner, which no one may do.
    KickOwner,
    /// Deleting the room, which only the owner may do.
    Delete,
    /// Joining a private room, which takes the owner's invitation.
    JoinPrivate,
    /// The owner leaving while others are members (alone, the owner's leave deletes it).
    LeaveAsOwner,
}

/// What an allowed [`RoomChange`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Store a membership event (for a creation, with the room itself), then
    /// [`Rooms::apply`] it.
    Event(Event),
    /// Delete the live room `room_id`, named `name`: an owner's deletion, or the owner
    /// leaving a room in which they are alone. The writer marks it deleted and re-reads the
    /// rooms; [`Rooms::replace`] then reports it gone, and its members are told.
    Delete { room_id: RoomId, name: String },
}

/// A membership event to store, with its effect on the room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The room the event is stored in.
    pub room: EventRoom,
    /// `create`, `join`, `invite`, `leave` or `kick`.
    pub kind: MessageKind,
    /// Who made the change: the event's sender.
    pub by: (UserId, String),
    /// The user the event names besides its sender: the one invited or kicked.
    pub member: Option<(UserId, String)>,
    /// The stretch of membership the event begins or ends.
    pub span: Span,
    /// The room's members, sorted, once the event is stored.
    pub members: Arc<Vec<UserId>>,
    /// Who receives the event: the members after a join, the members before a leave or kick
    /// (so the one leaving hears of it too).
    pub audience: Arc<Vec<UserId>>,
}

/// The room a membership event belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventRoom {
    /// A room to create with the event; the database gives it its id.
    New { name: String, private: bool },
    /// A live room.
    Live { id: RoomId, name: String },
}

impl EventRoom {
    /// The room's name, without `#`.
    pub fn name(&self) -> &str {
        match self {
            EventRoom::New { name, .. } | EventRoom::Live { name, .. } => name,
        }
    }
}

/// A change of one user's membership, as the room's spans record it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// The user becomes a member at the event.
    Opens(UserId),
    /// The user stops being a member at the event.
    Closes(UserId),
}

/// One live room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    /// Without `#`.
    pub name: String,
    /// `UserId(0)` for a room without an owner (none is made that way).
    pub owner_id: UserId,
    pub private: bool,
    /// Current members, sorted; replaced (not mutated) on every change so committed
    /// deliveries keep the list in force at their id.
    pub members: Arc<Vec<UserId>>,
}

impl Room {
    /// A room with these members, in any order.
    pub fn new(name: String, owner_id: UserId, private: bool, mut members: Vec<UserId>) -> Room {
        members.sort_unstable();
        members.dedup();
        Room {
            name,
            owner_id,
            private,
            members: Arc::new(members),
        }
    }

    /// Whether `user_id` is a member now.
    pub fn is_member(&self, user_id: UserId) -> bool {
        self.members.binary_search(&user_id).is_ok()
    }

    /// The member list with `user_id` added.
    fn with(&self, user_id: UserId) -> Arc<Vec<UserId>> {
        let mut next = self.members.as_ref().clone();
        if let Err(pos) = next.binary_search(&user_id) {
            next.insert(pos, user_id);
        }
        Arc::new(next)
    }

    /// The member list with `user_id` removed.
    fn without(&self, user_id: UserId) -> Arc<Vec<UserId>> {
        let mut next = self.members.as_ref().clone();
        next.retain(|u| *u != user_id);
        Arc::new(next)
    }
}

/// Every live room, by id: the one authority on membership while the server runs.
#[derive(Debug, Clone, Default)]
pub struct Rooms {
    rooms: HashMap<RoomId, Room>,
}

impl FromIterator<(RoomId, Room)> for Rooms {
    fn from_iter<I: IntoIterator<Item = (RoomId, Room)>>(rooms: I) -> Rooms {
        Rooms {
            rooms: rooms.into_iter().collect(),
        }
    }
}

impl Rooms {
    /// The members of `room_id` now (none for a room that is not live).
    pub fn members(&self, room_id: RoomId) -> Arc<Vec<UserId>> {
        self.rooms
            .get(&room_id)
            .map(|r| Arc::clone(&r.members))
            .unwrap_or_default()
    }

    /// Whether `user_id` may send to the room `room_id` (which the sender called `name`) at
    /// this point of its history: the room is live and the sender a member now. A former
    /// member, kicked or gone of their own accord, may not.
    pub fn may_send(&self, user_id: UserId, room_id: RoomId, name: &str) -> Result<(), Refusal> {
        match self.rooms.get(&room_id) {
            None => Err(Refusal::UnknownRoom {
                room: Some(name.to_string()),
            }),
            Some(r) if !r.is_member(user_id) => Err(Refusal::NotMember {
                room: name.to_string(),
            }),
            Some(_) => Ok(()),
        }
    }

    /// Decides a membership change against the state now: what it does, or why not.
    ///
    /// The rules: anyone may create a room (see the module docs on names). Anyone may join
    /// a public room they are not in; a private one takes the owner's invitation. Only the
    /// owner invites (a user not in the room yet), kicks (a member other than the owner) and
    /// deletes. A member may leave; the owner only when alone, which deletes the room.
    pub fn decide(&self, change: &RoomChange) -> Result<Decision, Refusal> {
        let live = |room_id: RoomId| {
            self.rooms
                .get(&room_id)
                .ok_or(Refusal::UnknownRoom { room: None })
        };
        let forbidden = |action: RoomAction, r: &Room| Refusal::Forbidden {
            action,
            room: r.name.clone(),
        };
        let event = |room_id: RoomId, r: &Room, kind, by: &(UserId, String), member, span| {
            let members = match span {
                Span::Opens(user) => r.with(user),
                Span::Closes(user) => r.without(user),
            };
            let audience = match span {
                Span::Opens(_) => Arc::clone(&members),
                Span::Closes(_) => Arc::clone(&r.members),
            };
            Decision::Event(Event {
                room: EventRoom::Live {
                    id: room_id,
                    name: r.name.clone(),
                },
                kind,
                by: by.clone(),
                member,
                span,
                members,
                audience,
            })
        };
        Ok(match change {
            RoomChange::Create { name, private, by } => {
                let members = Arc::new(vec![by.0]);
                Decision::Event(Event {
                    room: EventRoom::New {
                        name: name.clone(),
                        private: *private,
                    },
                    kind: MessageKind::Create,
                    by: by.clone(),
                    member: None,
                    span: Span::Opens(by.0),
                    audience: Arc::clone(&members),
                    members,
                })
            }
            RoomChange::Join { room_id, by } => {
                let r = live(*room_id)?;
                if r.is_member(by.0) {
                    return Err(Refusal::AlreadyMember {
                        room: r.name.clone(),
                    });
                }
                if r.private {
                    return Err(forbidden(RoomAction::JoinPrivate, r));
                }
                event(*room_id, r, MessageKind::Join, by, None, Span::Opens(by.0))
            }
            RoomChange::Invite { room_id, by, user } => {
                let r = live(*room_id)?;
                if r.owner_id != by.0 {
                    return Err(forbidden(RoomAction::Invite, r));
                }
                if r.is_member(user.0) {
                    return Err(Refusal::UserAlreadyMember {
                        room: r.name.clone(),
                        user: user.1.clone(),
                    });
                }
                let member = Some(user.clone());
                event(
                    *room_id,
                    r,
                    MessageKind::Invite,
                    by,
                    member,
                    Span::Opens(user.0),
                )
            }
            RoomChange::Leave { room_id, by } => {
                let r = live(*room_id)?;
                if !r.is_member(by.0) {
                    return Err(Refusal::NotMember {
                        room: r.name.clone(),
                    });
                }
                // The owner alone in the room may leave: the room is deleted (a room created
                // by mistake can be undone). With others in it, the owner stays.
                if r.owner_id == by.0 {
                    if r.members.len() > 1 {
                        return Err(forbidden(RoomAction::LeaveAsOwner, r));
                    }
                    return Ok(Decision::Delete {
                        room_id: *room_id,
                        name: r.name.clone(),
                    });
                }
                event(
                    *room_id,
                    r,
                    MessageKind::Leave,
                    by,
                    None,
                    Span::Closes(by.0),
                )
            }
            RoomChange::Delete { room_id, by } => {
                let r = live(*room_id)?;
                if r.owner_id != by.0 {
                    return Err(forbidden(RoomAction::Delete, r));
                }
                Decision::Delete {
                    room_id: *room_id,
                    name: r.name.clone(),
                }
            }
            RoomChange::Kick { room_id, by, user } => {
                let r = live(*room_id)?;
                if r.owner_id != by.0 {
                    return Err(forbidden(RoomAction::Kick, r));
                }
                if user.0 == r.owner_id {
                    return Err(forbidden(RoomAction::KickOwner, r));
                }
                if !r.is_member(user.0) {
                    return Err(Refusal::UserNotMember {
                        room: r.name.clone(),
                        user: user.1.clone(),
                    });
                }
                let member = Some(user.clone());
                event(
                    *room_id,
                    r,
                    MessageKind::Kick,
                    by,
                    member,
                    Span::Closes(user.0),
                )
            }
        })
    }

    /// Applies a stored event: a new room (`room_id` is the id the database gave it) joins
    /// the state, a live room gets the event's member list. Called after the commit.
    pub fn apply(&mut self, room_id: RoomId, event: &Event) {
        match &event.room {
            EventRoom::New { name, private } => {
                self.rooms.insert(
                    room_id,
                    Room {
                        name: name.clone(),
                        owner_id: event.by.0,
                        private: *private,
                        members: Arc::clone(&event.members),
                    },
                );
            }
            EventRoom::Live { id, .. } => {
                if let Some(room) = self.rooms.get_mut(id) {
                    room.members = Arc::clone(&event.members);
                }
            }
        }
    }

    /// Replaces the state with `fresh` (re-read from the database) and returns the rooms that
    /// were live and are gone now, by id: they were deleted, and their members (as they were)
    /// are to be told.
    pub fn replace(&mut self, fresh: Rooms) -> Vec<(RoomId, Room)> {
        let previous = std::mem::replace(&mut self.rooms, fresh.rooms);
        let mut gone: Vec<(RoomId, Room)> = previous
            .into_iter()
            .filter(|(id, _)| !self.rooms.contains_key(id))
            .collect();
        gone.sort_by_key(|(id, _)| *id);
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: UserId = UserId(1);
    const BOB: UserId = UserId(2);
    const CAROL: UserId = UserId(3);
    const OPS: RoomId = RoomId(10);
    const SECRET: RoomId = RoomId(11);

    fn user(id: UserId) -> (UserId, String) {
        let name = match id {
            ALICE => "alice",
            BOB => "bob",
            CAROL => "carol",
            _ => "someone",
        };
        (id, name.to_string())
    }

    /// `#ops` (public) and `#secret` (private), both owned by alice, with the given members
    /// besides her.
    fn rooms(ops: &[UserId], secret: &[UserId]) -> Rooms {
        let with_owner = |others: &[UserId]| [&[ALICE], others].concat();
        [
            (OPS, Room::new("ops".into(), ALICE, false, with_owner(ops))),
            (
                SECRET,
                Room::new("secret".into(), ALICE, true, with_owner(secret)),
            ),
        ]
        .into_iter()
        .collect()
    }

    /// Decides `change` and, when allowed, applies it as the writer does after the commit (a
    /// new room gets id 100). Returns the decision.
    fn commit(rooms: &mut Rooms, change: RoomChange) -> Result<Decision, Refusal> {
        let decision = rooms.decide(&change)?;
        match &decision {
            Decision::Event(event) => {
                let id = match &event.room {
                    EventRoom::New { .. } => RoomId(100),
                    EventRoom::Live { id, .. } => *id,
                };
                rooms.apply(id, event);
            }
            Decision::Delete { room_id, .. } => {
                let fresh = rooms
                    .rooms
                    .iter()
                    .filter(|(id, _)| *id != room_id)
                    .map(|(id, r)| (*id, r.clone()))
                    .collect();
                rooms.replace(fresh);
            }
        }
        Ok(decision)
    }

    fn event(decision: Decision) -> Event {
        match decision {
            Decision::Event(e) => e,
            other => panic!("not an event: {other:?}"),
        }
    }

    fn forbidden(action: RoomAction, room: &str) -> Refusal {
        Refusal::Forbidden {
            action,
            room: room.into(),
        }
    }

    fn join(room_id: RoomId, by: UserId) -> RoomChange {
        RoomChange::Join {
            room_id,
            by: user(by),
        }
    }

    fn invite(room_id: RoomId, by: UserId, who: UserId) -> RoomChange {
        RoomChange::Invite {
            room_id,
            by: user(by),
            user: user(who),
        }
    }

    fn leave(room_id: RoomId, by: UserId) -> RoomChange {
        RoomChange::Leave {
            room_id,
            by: user(by),
        }
    }

    fn delete(room_id: RoomId, by: UserId) -> RoomChange {
        RoomChange::Delete {
            room_id,
            by: user(by),
        }
    }

    fn kick(room_id: RoomId, by: UserId, who: UserId) -> RoomChange {
        RoomChange::Kick {
            room_id,
            by: user(by),
            user: user(who),
        }
    }

    const UNKNOWN: Refusal = Refusal::UnknownRoom { room: None };

    #[test]
    fn anyone_creates_a_room_and_is_its_owner_and_only_member() {
        let mut state = rooms(&[], &[]);
        for private in [false, true] {
            let e = event(
                commit(
                    &mut state,
                    RoomChange::Create {
                        name: "new".into(),
                        private,
                        by: user(BOB),
                    },
                )
                .unwrap(),
            );
            assert_eq!(
                e.room,
                EventRoom::New {
                    name: "new".into(),
                    private
                }
            );
            assert_eq!(
                (e.kind, e.by, e.member),
                (MessageKind::Create, user(BOB), None)
            );
            assert_eq!(e.span, Span::Opens(BOB));
            assert_eq!((&*e.members, &*e.audience), (&vec![BOB], &vec![BOB]));
            let room = state.rooms.get(&RoomId(100)).unwrap();
            assert_eq!(
                (room.name.as_str(), room.owner_id, room.private),
                ("new", BOB, private)
            );
            assert_eq!(state.may_send(BOB, RoomId(100), "new"), Ok(()));
        }
    }

    #[test]
    fn creation_leaves_name_uniqueness_to_the_database() {
        let state = rooms(&[], &[]);
        let change = RoomChange::Create {
            name: "ops".into(),
            private: false,
            by: user(BOB),
        };
        assert!(matches!(state.decide(&change), Ok(Decision::Event(_))));
    }

    #[test]
    fn anyone_joins_a_public_room_and_hears_of_it() {
        let mut state = rooms(&[CAROL], &[]);
        let e = event(commit(&mut state, join(OPS, BOB)).unwrap());
        assert_eq!(
            e.room,
            EventRoom::Live {
                id: OPS,
                name: "ops".into()
            }
        );
        assert_eq!(
            (e.kind, e.by, e.member),
            (MessageKind::Join, user(BOB), None)
        );
        assert_eq!(e.span, Span::Opens(BOB));
        assert_eq!(*e.members, vec![ALICE, BOB, CAROL]);
        assert_eq!(*e.audience, vec![ALICE, BOB, CAROL], "the joiner too");
        assert_eq!(*state.members(OPS), vec![ALICE, BOB, CAROL]);
    }

    #[test]
    fn a_member_cannot_join_again() {
        let state = rooms(&[BOB], &[BOB]);
        let already = |room: &str| Refusal::AlreadyMember { room: room.into() };
        assert_eq!(state.decide(&join(OPS, BOB)), Err(already("ops")));
        assert_eq!(state.decide(&join(OPS, ALICE)), Err(already("ops")));
        // Being a member is checked before privacy.
        assert_eq!(state.decide(&join(SECRET, BOB)), Err(already("secret")));
    }

    #[test]
    fn a_private_room_takes_an_invitation() {
        let mut state = rooms(&[], &[]);
        assert_eq!(
            state.decide(&join(SECRET, BOB)),
            Err(forbidden(RoomAction::JoinPrivate, "secret"))
        );
        commit(&mut state, invite(SECRET, ALICE, BOB)).unwrap();
        assert!(state.rooms.get(&SECRET).unwrap().is_member(BOB));
    }

    #[test]
    fn the_owner_invites_a_user_who_is_not_in_the_room() {
        let mut state = rooms(&[], &[CAROL]);
        for room in [OPS, SECRET] {
            let e = event(commit(&mut state, invite(room, ALICE, BOB)).unwrap());
            assert_eq!(
                (e.kind, e.by, e.member),
                (MessageKind::Invite, user(ALICE), Some(user(BOB)))
            );
            assert_eq!(e.span, Span::Opens(BOB));
            assert!(e.members.contains(&BOB));
            assert_eq!(e.audience, e.members, "the invited user hears of it");
            assert_eq!(state.may_send(BOB, room, "x"), Ok(()));
        }
    }

    #[test]
    fn only_the_owner_invites() {
        let state = rooms(&[BOB], &[BOB]);
        assert_eq!(
            state.decide(&invite(OPS, BOB, CAROL)),
            Err(forbidden(RoomAction::Invite, "ops"))
        );
        assert_eq!(
            state.decide(&invite(SECRET, BOB, CAROL)),
            Err(forbidden(RoomAction::Invite, "secret"))
        );
        // A non-member cannot either, nor invite themselves.
        assert_eq!(
            state.decide(&invite(OPS, CAROL, CAROL)),
            Err(forbidden(RoomAction::Invite, "ops"))
        );
        // Ownership is checked before membership of the invited user.
        assert_eq!(
            state.decide(&invite(OPS, BOB, ALICE)),
            Err(forbidden(RoomAction::Invite, "ops"))
        );
    }

    #[test]
    fn a_member_cannot_be_invited() {
        let state = rooms(&[BOB], &[]);
        assert_eq!(
            state.decide(&invite(OPS, ALICE, BOB)),
            Err(Refusal::UserAlreadyMember {
                room: "ops".into(),
                user: "bob".into()
            })
        );
        assert_eq!(
            state.decide(&invite(OPS, ALICE, ALICE)),
            Err(Refusal::UserAlreadyMember {
                room: "ops".into(),
                user: "alice".into()
            })
        );
    }

    #[test]
    fn a_member_leaves_and_hears_of_it() {
        let mut state = rooms(&[BOB, CAROL], &[]);
        let before = state.members(OPS);
        let e = event(commit(&mut state, leave(OPS, BOB)).unwrap());
        assert_eq!(
            (e.kind, e.by, e.member),
            (MessageKind::Leave, user(BOB), None)
        );
        assert_eq!(e.span, Span::Closes(BOB));
        assert_eq!(*e.members, vec![ALICE, CAROL]);
        assert_eq!(*e.audience, vec![ALICE, BOB, CAROL], "the leaver too");
        assert_eq!(*state.members(OPS), vec![ALICE, CAROL]);
        // The list in force before the change is untouched: deliveries committed earlier
        // still carry it.
        assert_eq!(*before, vec![ALICE, BOB, CAROL]);
    }

    #[test]
    fn a_non_member_cannot_leave() {
        let mut state = rooms(&[BOB], &[]);
        let not_member = |room: &str| Refusal::NotMember { room: room.into() };
        assert_eq!(state.decide(&leave(OPS, CAROL)), Err(not_member("ops")));
        assert_eq!(state.decide(&leave(SECRET, BOB)), Err(not_member("secret")));
        commit(&mut state, leave(OPS, BOB)).unwrap();
        assert_eq!(state.decide(&leave(OPS, BOB)), Err(not_member("ops")));
    }

    #[test]
    fn the_owner_alone_leaves_by_deleting_the_room() {
        let mut state = rooms(&[BOB], &[]);
        assert_eq!(
            commit(&mut state, leave(SECRET, ALICE)),
            Ok(Decision::Delete {
                room_id: SECRET,
                name: "secret".into()
            })
        );
        assert!(!state.rooms.contains_key(&SECRET));
        // Once the others have gone, the owner is alone.
        commit(&mut state, leave(OPS, BOB)).unwrap();
        assert_eq!(
            state.decide(&leave(OPS, ALICE)),
            Ok(Decision::Delete {
                room_id: OPS,
                name: "ops".into()
            })
        );
    }

    #[test]
    fn the_owner_cannot_leave_others_behind() {
        let state = rooms(&[BOB], &[CAROL]);
        assert_eq!(
            state.decide(&leave(OPS, ALICE)),
            Err(forbidden(RoomAction::LeaveAsOwner, "ops"))
        );
        assert_eq!(
            state.decide(&leave(SECRET, ALICE)),
            Err(forbidden(RoomAction::LeaveAsOwner, "secret"))
        );
    }

    #[test]
    fn the_owner_deletes_a_room_with_members_in_it() {
        let mut state = rooms(&[BOB, CAROL], &[]);
        assert_eq!(
            commit(&mut state, delete(OPS, ALICE)),
            Ok(Decision::Delete {
                room_id: OPS,
                name: "ops".into()
            })
        );
        assert!(!state.rooms.contains_key(&OPS));
        assert_eq!(state.decide(&join(OPS, BOB)), Err(UNKNOWN));
    }

    #[test]
    fn only_the_owner_deletes() {
        let state = rooms(&[BOB], &[]);
        assert_eq!(
            state.decide(&delete(OPS, BOB)),
            Err(forbidden(RoomAction::Delete, "ops"))
        );
        assert_eq!(
            state.decide(&delete(SECRET, CAROL)),
            Err(forbidden(RoomAction::Delete, "secret"))
        );
    }

    #[test]
    fn the_owner_kicks_a_member_who_hears_of_it() {
        let mut state = rooms(&[BOB, CAROL], &[BOB]);
        let e = event(commit(&mut state, kick(OPS, ALICE, BOB)).unwrap());
        assert_eq!(
            (e.kind, e.by, e.member),
            (MessageKind::Kick, user(ALICE), Some(user(BOB)))
        );
        assert_eq!(e.span, Span::Closes(BOB));
        assert_eq!(*e.members, vec![ALICE, CAROL]);
        assert_eq!(*e.audience, vec![ALICE, BOB, CAROL], "the kicked user too");
        let e = event(commit(&mut state, kick(SECRET, ALICE, BOB)).unwrap());
        assert_eq!(*e.members, vec![ALICE]);
        // A kicked user may come back to a public room, but not to a private one.
        commit(&mut state, join(OPS, BOB)).unwrap();
        assert_eq!(
            state.decide(&join(SECRET, BOB)),
            Err(forbidden(RoomAction::JoinPrivate, "secret"))
        );
    }

    #[test]
    fn only_the_owner_kicks() {
        let state = rooms(&[BOB, CAROL], &[]);
        assert_eq!(
            state.decide(&kick(OPS, BOB, CAROL)),
            Err(forbidden(RoomAction::Kick, "ops"))
        );
        // Not even themselves, nor the owner; ownership of the kicker is checked first.
        assert_eq!(
            state.decide(&kick(OPS, BOB, BOB)),
            Err(forbidden(RoomAction::Kick, "ops"))
        );
        assert_eq!(
            state.decide(&kick(OPS, BOB, ALICE)),
            Err(forbidden(RoomAction::Kick, "ops"))
        );
        // Nor someone from outside the room.
        assert_eq!(
            state.decide(&kick(SECRET, BOB, CAROL)),
            Err(forbidden(RoomAction::Kick, "secret"))
        );
    }

    #[test]
    fn the_owner_cannot_be_kicked_even_by_themselves() {
        let state = rooms(&[BOB], &[]);
        assert_eq!(
            state.decide(&kick(OPS, ALICE, ALICE)),
            Err(forbidden(RoomAction::KickOwner, "ops"))
        );
    }

    #[test]
    fn a_non_member_cannot_be_kicked() {
        let mut state = rooms(&[BOB], &[]);
        let not_member = |user: &str| Refusal::UserNotMember {
            room: "ops".into(),
            user: user.into(),
        };
        assert_eq!(
            state.decide(&kick(OPS, ALICE, CAROL)),
            Err(not_member("carol"))
        );
        commit(&mut state, kick(OPS, ALICE, BOB)).unwrap();
        assert_eq!(state.decide(&kick(OPS, ALICE, BOB)), Err(not_member("bob")));
    }

    #[test]
    fn every_change_to_a_room_that_is_not_live_is_refused() {
        let mut state = rooms(&[BOB], &[]);
        commit(&mut state, delete(OPS, ALICE)).unwrap();
        for room in [OPS, RoomId(999)] {
            for change in [
                join(room, CAROL),
                invite(room, ALICE, CAROL),
                leave(room, BOB),
                leave(room, ALICE),
                delete(room, ALICE),
                kick(room, ALICE, BOB),
            ] {
                assert_eq!(state.decide(&change), Err(UNKNOWN), "{change:?}");
            }
        }
    }

    #[test]
    fn members_send_and_no_one_else() {
        let mut state = rooms(&[BOB, CAROL], &[]);
        assert_eq!(state.may_send(ALICE, OPS, "ops"), Ok(()));
        assert_eq!(state.may_send(BOB, OPS, "ops"), Ok(()));
        let not_member = || Err(Refusal::NotMember { room: "ops".into() });
        assert_eq!(state.may_send(UserId(99), OPS, "ops"), not_member());
        // A former member, gone of their own accord or kicked.
        commit(&mut state, leave(OPS, BOB)).unwrap();
        assert_eq!(state.may_send(BOB, OPS, "ops"), not_member());
        commit(&mut state, kick(OPS, ALICE, CAROL)).unwrap();
        assert_eq!(state.may_send(CAROL, OPS, "ops"), not_member());
        // Back in, they may again.
        commit(&mut state, join(OPS, BOB)).unwrap();
        assert_eq!(state.may_send(BOB, OPS, "ops"), Ok(()));
        // A private room the sender was never in.
        assert_eq!(
            state.may_send(BOB, SECRET, "secret"),
            Err(Refusal::NotMember {
                room: "secret".into()
            })
        );
    }

    #[test]
    fn no_one_sends_to_a_room_that_is_not_live() {
        let mut state = rooms(&[BOB], &[]);
        commit(&mut state, delete(OPS, ALICE)).unwrap();
        for (user, room) in [(ALICE, OPS), (BOB, OPS), (ALICE, RoomId(999))] {
            assert_eq!(
                state.may_send(user, room, "ops"),
                Err(Refusal::UnknownRoom {
                    room: Some("ops".into())
                })
            );
        }
        assert!(state.members(OPS).is_empty());
    }

    #[test]
    fn a_refused_change_changes_nothing() {
        let state = rooms(&[BOB], &[]);
        let before = state.clone();
        for change in [
            join(OPS, BOB),
            join(SECRET, CAROL),
            invite(OPS, BOB, CAROL),
            leave(OPS, ALICE),
            kick(OPS, ALICE, ALICE),
        ] {
            assert!(state.decide(&change).is_err());
        }
        assert_eq!(state.rooms, before.rooms);
        // And an allowed one only once applied.
        assert!(state.decide(&join(OPS, CAROL)).is_ok());
        assert_eq!(state.rooms, before.rooms);
    }

    #[test]
    fn a_re_read_reports_the_rooms_that_went_with_their_members() {
        let mut state = rooms(&[BOB], &[CAROL]);
        let fresh: Rooms = [(SECRET, state.rooms.get(&SECRET).unwrap().clone())]
            .into_iter()
            .chain([(RoomId(50), Room::new("later".into(), BOB, false, vec![BOB]))])
            .collect();
        let gone = state.replace(fresh);
        assert_eq!(gone.len(), 1);
        assert_eq!((gone[0].0, gone[0].1.name.as_str()), (OPS, "ops"));
        assert_eq!(*gone[0].1.members, vec![ALICE, BOB]);
        assert!(!state.rooms.contains_key(&OPS) && state.rooms.contains_key(&RoomId(50)));
        let ids: Vec<RoomId> = state
            .replace(Rooms::default())
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, vec![SECRET, RoomId(50)]);
        assert!(state.replace(Rooms::default()).is_empty());
    }

    #[test]
    fn member_lists_are_sorted_without_repeats() {
        let room = Room::new(
            "r".into(),
            UserId(3),
            false,
            [3, 1, 2, 1].map(UserId).to_vec(),
        );
        assert_eq!(*room.members, [1, 2, 3].map(UserId).to_vec());
        assert!(room.is_member(UserId(2)) && !room.is_member(UserId(4)));
    }
}
