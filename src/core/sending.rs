//! Sending: what a message must be (not blank, within the size limit, with a usable
//! idempotency key), where it goes (a user or a room, by name), and its hand-off to the
//! writer. Whether the sender may post to a room is decided by the writer at commit, against
//! the membership in force at the message's id; a refusal comes back as
//! [`Refusal::Room`].

use futures::future::BoxFuture;
use futures::FutureExt;

use super::refusal::{CoreError, Refusal};
use super::ServerState;
use crate::auth::AuthedUser;
use crate::ids::MessageId;
use crate::protocol::{is_blank, MAX_SEND_KEY_LEN};
use crate::store::{Committed, NewMessage, Target};

/// A message as a user asks to send it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// `bob` or `#room`.
    pub to: String,
    pub body: String,
    /// The client's idempotency key: a retry with the same key stores nothing new.
    pub key: String,
    /// An action (emote), shown as `* sender body`.
    pub action: bool,
}

/// A message on its way to the writer.
pub struct Sending {
    /// Where it goes, as stored: `bob` or `#room`.
    pub to: String,
    /// Resolves once the message is committed (or found to be a retry).
    pub committed: BoxFuture<'static, Result<Committed, CoreError>>,
}

impl ServerState {
    /// Where a message to `name` (`bob` or `#room`) goes.
    pub async fn target(&self, name: &str) -> Result<Target, CoreError> {
        if name.starts_with('#') {
            let room = self.room_named(name).await?;
            Ok(Target::Room(room.id, room.name))
        } else {
            let user = self.user_named(name).await?;
            Ok(Target::User(user.id, user.name))
        }
    }

    /// Checks and addresses a message, then hands it to the writer. The returned future
    /// resolves once the message is committed (or found to be a retry): a front end can
    /// keep reading while it waits.
    pub async fn send(&self, user: &AuthedUser, message: Outgoing) -> Result<Sending, CoreError> {
        if is_blank(&message.body) {
            return Err(Refusal::EmptyMessage.into());
        }
        let max = self.limits.max_body;
        if message.body.len() > max {
            return Err(Refusal::MessageTooLarge {
                size: message.body.len(),
                max,
            }
            .into());
        }
        let key = &message.key;
        if key.is_empty() || key.len() > MAX_SEND_KEY_LEN || key.chars().any(char::is_control) {
            return Err(Refusal::BadKey {
                max: MAX_SEND_KEY_LEN,
            }
            .into());
        }
        let target = self.target(&message.to).await?;
        let to = match &target {
            // `#room` or `bob`: the names' `Display`.
            Target::Room(_, name) => name.to_string(),
            Target::User(_, name) => name.to_string(),
        };
        let new = NewMessage {
            sender_id: user.user_id(),
            sender_name: user.name().to_string(),
            sender_device_id: user.device_id(),
            target,
            body: message.body,
            key: message.key,
            action: message.action,
        };
        let writer = self.writer.clone();
        Ok(Sending {
            to,
            committed: async move { writer.send(new).await.map_err(CoreError::from) }.boxed(),
        })
    }

    /// Moves the device's cursor to `upto`; resolves once that is committed.
    pub fn ack(
        &self,
        user: &AuthedUser,
        upto: MessageId,
    ) -> BoxFuture<'static, Result<(), CoreError>> {
        let writer = self.writer.clone();
        let (user_id, device_id) = (user.user_id(), user.device_id());
        async move {
            writer
                .ack(user_id, device_id, upto)
                .await
                .map_err(CoreError::Internal)
        }
        .boxed()
    }
}
