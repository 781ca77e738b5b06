//! `chat-svc`: a self-hosted chat service. The server keeps everything in one SQLite file (or,
//! for several nodes serving one community, in one PostgreSQL database) and speaks
//! length-prefixed JSON over TLS 1.3; clients pin the server's key instead of trusting a
//! certificate authority.
//!
//! # Bird's-eye view
//!
//! One package, `chat-svc`: this library (`chat_svc`) and two thin binaries, `chatd` (the
//! server and its admin commands) and `chat` (the command-line client). Each binary parses its
//! flags, sets up logging and a runtime, calls [`cli::chatd::run`] or [`cli::chat::run`], and
//! prints `chatd: error: …` on failure. The integration tests and the bench drive the same
//! library: a real [`server::Server`] on `127.0.0.1:0`, real TLS, the real [`client`].
//! `docs/architecture.md` is the longer tour; `docs/protocol.md` is the wire protocol.
//!
//! # Code map
//!
//! - [`protocol`]: the wire vocabulary (`Request`, `ServerFrame`, `ErrorCode`, `Secret`,
//!   `Username`, limits); [`protocol::codec`] does the framing.
//! - [`store`]: one seam, [`store::Store`], an enum over two storage backends, SQLite's
//!   `SqliteStore` (`store/mod.rs` and its modules) and PostgreSQL's `PostgresStore`
//!   (`store/pg/`), each method handed to the backend by one dispatch macro
//!   (`store/seam.rs` says what a backend must provide); [`store::DbTarget`] names the
//!   database (a path or `sqlite:`, or `postgres://`). Shared by both: the writer's handle
//!   and operations ([`store::Writer`], group commit of sends and acks, membership changes),
//!   the membership rules as pure functions (`store/membership.rs`: a change → the event or a
//!   typed [`store::Refusal`]) and the copy between backends (`store/transfer.rs`, `chatd
//!   migrate`). SQLite's side: the pool, `migrations/sqlite/`, the single writer, a WAL
//!   checkpointer and the search indexer (a derived file). PostgreSQL's side
//!   (`migrations/postgres/`): a writer per node taking ids from one counter row
//!   (`store/pg/writer.rs`), a tail per node feeding the hub every node's commits in id
//!   order (`store/pg/tail.rs`), a search indexer per node filling a GIN-indexed table
//!   after commit (`store/pg/indexer.rs`) and the cluster's key check
//!   (`store/pg/cluster.rs`).
//! - [`core`]: protocol-neutral, every operation a user can perform, with its
//!   authorization: `ServerState` (store, auth, writer, hub, limits, user and room caches);
//!   [`core::reading`] (names, the one rule for who may read a conversation or see a room's
//!   members, history, search, read markers, unread), [`core::rooms`] (membership changes),
//!   [`core::sending`] (a send's checks and hand-off to the writer), [`core::refusal`] (typed
//!   refusals: the front ends make the words), [`core::rate`] (each operation's cost from the
//!   connection's bucket), [`core::hub`] (live connections and fan-out of typed pushes) and
//!   [`core::delivery`] (the backlog → live hand-off).
//! - [`conn`]: connection plumbing every front end shares: the TLS accept with its timeout,
//!   the kick-aware bounded write, hub registration with the revocation re-check, the
//!   per-address slot.
//! - [`native`]: the native front end; `native/session.rs` is one connection's state
//!   machine (frames in, core calls, frames out), `native/session/rooms.rs` its conversation
//!   requests, `native/refusals.rs` every refusal as an `error` frame.
//! - [`server`]: the listeners above every front end: `Server::start` and
//!   `Server::run(listener, shutdown)` (or `run_with` to serve the IRC listeners too), the
//!   accept loops, the revocation watcher. Nothing but `cli` and `bench` imports it.
//! - [`auth`]: argon2id on a bounded low-priority thread pool, device tokens, login
//!   throttling (per account, per address, server-wide), the device cap.
//! - [`tls`]: the crypto provider, the server certificate (rcgen), key fingerprints; the
//!   client's pinning verifier is [`tls::pin`].
//! - [`irc`]: the IRC gateway: IRC clients on the same core, an IRC connection being a
//!   named device whose cursor moves only when a PONG proves receipt; its commands are core
//!   calls, its numerics the core's refusals in IRC's words; `docs/irc.md` is the user's view.
//! - [`client`]: the async client library used by `chat`, the tests and the bench;
//!   [`client::state`] owns `known_servers` and `session.json` in `$CHAT_HOME`;
//!   [`client::inbox`] is the delivery loop `chat recv` and the TUI share: resume from the
//!   cursor, drop what was seen, record `last_seen` before acking, reconnect with backoff,
//!   keepalive.
//! - [`config`]: server settings, flags and `CHATD_*` > TOML file > defaults.
//! - [`cli`]: what each `chatd` and `chat` subcommand does.
//! - [`tui`]: the full-screen terminal client (`chat` with no command): a state machine
//!   (`tui/state.rs`), rendering (`tui/render.rs`), the input editor and its connection
//!   (`tui/net.rs`) on [`client`].
//! - [`bench`](mod@bench): `chatd bench`, load scenarios over real TLS with [`client`], against an
//!   in-process [`server`] or another one; its submodules import one way (see its docs).
//! - `bucket`: the token bucket behind per-connection and login rates.
//! - [`ids`]: the typed ids `UserId`, `DeviceId`, `RoomId`, `MessageId`.
//!
//! The imports between these modules point one way: `ids`, `protocol`, `store`, `auth`,
//! `tls`, `bucket` at the bottom; `core` and `conn` above them; the front ends (`native`, `irc`)
//! above those; `server` above the front ends; `cli` on top (`client` and `tui` use only
//! `protocol`, `tls` and `client`). `python3 .ci/modcycles.py src` checks that there is no
//! cycle, and CI runs it.
//!
//! # How a message travels
//!
//! `send` reaches the sender's session, which hands it to the core (`ServerState::send`:
//! checks, addressing) and the core queues it to the writer. The writer stores everything
//! queued in one transaction, assigning ids in commit order, and only after the commit hands
//! the new messages to the hub and answers the session (which replies `sent{id}`). On
//! PostgreSQL the ids come from the counter row every node's writer locks first, and the hub
//! is fed by the node's tail, which passes the node's own commits straight on and reads
//! other nodes' from the table. The hub puts each one on the bounded queue of every subscribed
//! connection of the recipient (and of the sender's other devices); each of those sessions
//! writes a `msg` frame. The client acks; the ack goes through the writer too and moves that
//! device's cursor, from which the next connection resumes.
//!
//! # Invariants
//!
//! - No rule lives in a front end: who may read, send, join, invite, kick or delete, and what
//!   each request costs from the rate bucket, is decided in [`core`] (and, for membership,
//!   the store's pure rules), once; a front end only translates a typed refusal.
//! - English text is made at the edge that shows it: `store` and `core` report typed facts.
//! - Only [`protocol`] knows the wire encoding; everyone else exchanges typed values. The
//!   IRC text form lives in [`irc`] alone, which translates it to the same typed values.
//! - One message path: the IRC gateway stores, authorizes and delivers through the same
//!   auth, writer, hub and store as the native protocol; it keeps no state of its own.
//! - Only [`store`] contains SQL; no sqlx type appears outside it.
//! - Only [`auth`] constructs an [`auth::AuthedUser`]; handlers that need an identity take
//!   one as a parameter, so no request is served before login by mistake.
//! - Only [`tls`] replaces certificate verification, and only with the pin check; handshake
//!   signatures are still verified by the one crypto provider (ring), chosen in [`tls`].
//! - No lock is held across `.await`: shared state sits behind `std::sync::Mutex` in short
//!   synchronous sections (the guard is not `Send`, so a spawned task cannot keep one across
//!   an `.await` and still compile).
//! - No argon2 on a runtime worker: every hash and verify runs on the hasher's own threads
//!   (`SCHED_IDLE`, so delivery always gets the CPU first) behind a semaphore.
//! - The message writer has a thread and a SQLite connection of its own: its commits never
//!   queue behind sessions on the runtime.
//! - No unbounded channel. A full per-connection queue disconnects that connection; it never
//!   makes the writer or a sender wait.
//! - Nothing reachable from network input panics; a bad frame ends only its own connection.
//! - No password, token or key in a log line, `Debug` output or argv: they travel as
//!   `protocol::Secret` (redacted `Debug`), and passwords come from a prompt or stdin.

#![forbid(unsafe_code)]
pub mod auth;
pub mod bench;
pub(crate) mod bucket;
pub mod cli;
pub mod client;
pub mod config;
pub mod conn;
pub mod core;
pub mod ids;
pub mod irc;
pub mod native;
pub mod protocol;
pub mod server;
pub mod store;
pub mod tls;
pub mod tui;
