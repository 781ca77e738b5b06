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

    /// Checks and addresses a message, then puts it on the writer's queue before returning
    /// (so one connection's sends get ids in the order it made them). The returned future
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
        // Queued now, not when `committed` is first polled: a session waiting for several
        // answers at once (IRC's `FuturesOrdered`, the native `FuturesUnordered`) polls them
        // in wake-up order, which need not be the order it read the sends in.
        let committed = self.writer.queue_send(new).await?;
        Ok(Sending {
            to,
            committed: async move { committed.await.map_err(CoreError::from) }.boxed(),
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

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    use super::*;
    use crate::auth::proof::ProofKey;
    use crate::auth::{Auth, AuthLimits, Hasher};
    use crate::core::hub::Hub;
    use crate::core::Limits;
    use crate::protocol::{Secret, Username};
    use crate::store::{Durability, Store};

    const PASSWORD: &str = "correct horse battery staple";

    /// The core over a real store and writer in `dir`, with `alice` logged in.
    async fn state_with_alice(dir: &std::path::Path) -> (ServerState, AuthedUser) {
        let store = Store::open(&dir.join("chatd.db"), Durability::Normal)
            .await
            .unwrap();
        let hasher = Hasher::new(1).await.unwrap();
        let hash = hasher.hash(&Secret::new(PASSWORD)).await.unwrap();
        for name in ["alice", "bob"] {
            store
                .create_user(&Username::parse(name).unwrap(), &hash)
                .await
                .unwrap();
        }
        let proof_key = ProofKey::new(store.login_proof_key().await.unwrap());
        let hub = Arc::new(Hub::default());
        let fanout = Arc::clone(&hub);
        let (writer, _task) = store
            .start_writer(Box::new(move |batch| fanout.deliver(batch)))
            .await
            .unwrap();
        let auth = Auth::new(store.clone(), hasher, AuthLimits::default(), proof_key);
        let grant = auth
            .login(
                "alice",
                &Secret::new(PASSWORD),
                None,
                "test",
                IpAddr::V4(Ipv4Addr::LOCALHOST),
            )
            .await
            .unwrap();
        let state = ServerState::new(store, auth, writer, hub, Limits::default());
        (state, grant.user)
    }

    fn to_bob(body: &str) -> Outgoing {
        Outgoing {
            to: "bob".into(),
            body: body.into(),
            key: format!("key-{body}"),
            action: false,
        }
    }

    /// A session waiting for several answers at once polls them in wake-up order, not in
    /// the order it read the sends (the IRC gateway's `FuturesOrdered` did, under load):
    /// the order of the messages must not depend on it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sends_get_ids_in_the_order_they_were_made_whatever_order_they_are_awaited() {
        let dir = tempfile::tempdir().unwrap();
        let (state, alice) = state_with_alice(dir.path()).await;
        let first = state.send(&alice, to_bob("first")).await.unwrap();
        let second = state.send(&alice, to_bob("second")).await.unwrap();
        // The later send's answer is polled first.
        let second = second.committed.await.unwrap();
        let first = first.committed.await.unwrap();
        assert!(
            first.id < second.id,
            "the first send got id {}, the second {}",
            first.id.get(),
            second.id.get()
        );
        state.store.close().await;
    }
}
