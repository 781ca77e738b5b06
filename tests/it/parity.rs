//! The same rule on every front end: the core decides, the native protocol and the IRC
//! gateway only put its answer into their words. Each test asks both front ends the same
//! thing and checks that they agree.

use chat_svc::core::Limits;
use chat_svc::protocol::ErrorCode;

use crate::common::*;
use crate::irc::Irc;

/// Operations each connection may burst before it is refused, and a refill so slow that
/// none comes back during a test.
const BURST: u32 = 3;

fn rate_limits() -> Limits {
    Limits {
        send_rate_per_sec: 1,
        send_burst: BURST,
        ..test_limits()
    }
}

/// Which native request and which IRC command are the same core operation.
#[derive(Debug, Clone, Copy)]
enum Op {
    Members,
    RoomList,
    ReadMarker,
    History,
    Send,
    Join,
}

impl Op {
    fn irc(self) -> &'static str {
        match self {
            Op::Members => "NAMES #open",
            Op::RoomList => "LIST",
            Op::ReadMarker => "MARKREAD #open timestamp=2030-01-01T00:00:00.000Z",
            Op::History => "CHATHISTORY LATEST #open * 10",
            Op::Send => "PRIVMSG #open :hello",
            Op::Join => "JOIN #open",
        }
    }

    async fn native(self, c: &chat_svc::client::Client) -> Result<(), ErrorCode> {
        let result = match self {
            Op::Members => c.room_members("#open").await.map(|_| ()),
            Op::RoomList => c.room_list(true).await.map(|_| ()),
            Op::ReadMarker => c.read("#open", None).await.map(|_| ()),
            Op::History => c.history("#open", None, None).await.map(|_| ()),
            Op::Send => c
                .send("#open", "hello", &chat_svc::client::new_send_key())
                .await
                .map(|_| ()),
            Op::Join => c.room_join("#open").await.map(|_| ()),
        };
        result.map_err(|e| e.code().unwrap_or(ErrorCode::Internal))
    }
}

/// Sends `command` and reads until its answer is complete (a PING sent after it comes
/// back); true if the server answered it with `263` (rate limited).
async fn irc_refused(irc: &mut Irc, command: &str) -> bool {
    irc.send(command).await;
    irc.sync().await.iter().any(|m| {
        m.command == "263"
            && m.params.get(1).map(String::as_str) == Some(command.split(' ').next().unwrap())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_bucket_charges_the_same_operations_on_both_front_ends() {
    let server = TestServer::start_irc(rate_limits()).await;
    server.add_users(&["alice", "bob"]).await;
    let (owner, _) = server.login("bob").await;
    owner.client.room_create("#open", false).await.unwrap();
    for op in [
        Op::Members,
        Op::RoomList,
        Op::ReadMarker,
        Op::History,
        Op::Send,
        Op::Join,
    ] {
        // Native: a fresh connection has a full bucket of BURST tokens.
        let (native, _) = server.login("alice").await;
        if !matches!(op, Op::Join) {
            let _ = native.client.room_join("#open").await;
        }
        let mut native_refused = Vec::new();
        for _ in 0..=BURST {
            let refused = op.native(&native.client).await == Err(ErrorCode::RateLimited);
            native_refused.push(refused);
        }
        // IRC: the same, on a fresh IRC connection.
        let mut irc = Irc::login(&server, "alice").await;
        let mut irc_refused_at = Vec::new();
        if !matches!(op, Op::Join) {
            irc.send("JOIN #open").await;
            irc.sync().await;
        }
        for _ in 0..=BURST {
            irc_refused_at.push(irc_refused(&mut irc, op.irc()).await);
        }
        assert_eq!(
            native_refused, irc_refused_at,
            "{op:?}: native and IRC disagree on what is charged (true = rate limited)"
        );
        // The set-up JOIN took one token; a JOIN of a room one is already in is answered
        // with nothing on IRC (an error natively) and still charged.
        let expected = if matches!(op, Op::Join) {
            vec![false, false, false, true]
        } else {
            vec![false, false, true, true]
        };
        assert_eq!(native_refused, expected, "{op:?} on the native protocol");
        drop(native);
    }
    // Keeping a connection alive is free on both.
    let (native, _) = server.login("alice").await;
    let mut irc = Irc::login(&server, "alice").await;
    for _ in 0..=2 * BURST {
        native.client.ping().await.unwrap();
        let lines = irc.sync().await;
        assert!(!lines.iter().any(|m| m.command == "263"), "{lines:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_rooms_members_are_hidden_from_a_non_member_on_both_front_ends() {
    let server = TestServer::start_irc(test_limits()).await;
    server.add_users(&["alice", "bob", "mallory"]).await;
    let (alice, _) = server.login("alice").await;
    alice.client.room_create("#secret", true).await.unwrap();
    alice.client.room_create("#open", false).await.unwrap();
    alice.client.room_invite("#secret", "bob").await.unwrap();

    let (mallory, _) = server.login("mallory").await;
    let mut irc = Irc::login(&server, "mallory").await;
    // A public room's members are anyone's to see, on both front ends.
    let open = mallory.client.room_members("#open").await.unwrap();
    assert_eq!(open.len(), 1);
    irc.send("NAMES #open").await;
    let names = irc.until(|m| m.command == "366").await;
    assert!(
        names
            .iter()
            .any(|m| m.command == "353" && m.params.last().unwrap().contains("alice")),
        "{names:#?}"
    );

    // A private one's are not, to a stranger: native refuses, NAMES and WHO list nobody.
    let hidden = |irc_lines: &[chat_svc::irc::message::IrcMessage], what: &str| {
        assert!(
            !irc_lines
                .iter()
                .any(|m| m.command == "353" || m.command == "352"),
            "{what} showed a private room's members: {irc_lines:#?}"
        );
    };
    let err = mallory.client.room_members("#secret").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotMember), "{err}");
    irc.send("NAMES #secret").await;
    hidden(&irc.until(|m| m.command == "366").await, "NAMES");
    irc.send("WHO #secret").await;
    hidden(&irc.until(|m| m.command == "315").await, "WHO");

    // A member sees them on both front ends; once kicked, no longer.
    let (bob, _) = server.login("bob").await;
    assert_eq!(bob.client.room_members("#secret").await.unwrap().len(), 2);
    let mut bob_irc = Irc::login(&server, "bob").await;
    bob_irc.send("WHO #secret").await;
    let who = bob_irc.until(|m| m.command == "315").await;
    assert_eq!(
        who.iter().filter(|m| m.command == "352").count(),
        2,
        "{who:#?}"
    );
    alice.client.room_kick("#secret", "bob").await.unwrap();
    let err = bob.client.room_members("#secret").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotMember), "{err}");
    bob_irc.send("NAMES #secret").await;
    hidden(
        &bob_irc.until(|m| m.command == "366").await,
        "NAMES after a kick",
    );
    bob_irc.send("WHO #secret").await;
    hidden(
        &bob_irc.until(|m| m.command == "315").await,
        "WHO after a kick",
    );
}
