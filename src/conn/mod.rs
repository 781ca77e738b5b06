//! Connection plumbing every front end shares (the native one, the IRC gateway, and the
//! WebSocket one to come), so that each phase of a connection is bounded, and ends, the
//! same way whatever the connection speaks:
//!
//! - `handshake`: the TLS accept within the handshake timeout, and the plain answer to a
//!   client that speaks plaintext to a TLS port (the words are the front end's);
//! - `register`: registration of an authenticated connection with the hub, then the
//!   revocation re-check that closes the window between the credential check and the
//!   registration;
//! - `kicks`: the kick reasons the hub sends a registered connection;
//! - `write`: the bounded write, which also ends at once when the hub kicks the
//!   connection (a peer that does not read must not keep its queue until the write
//!   timeout);
//! - `slot`: the per-address connection count the listeners take for each connection.
//!
//! `conn` sits above [`crate::core`] (it registers with the hub) and below the front ends
//! and the listeners; `core` never imports it. It knows no wire format and makes no text
//! for the peer: what a connection is told stays its front end's.

pub(crate) mod handshake;
pub(crate) mod kicks;
pub(crate) mod register;
pub(crate) mod slot;
pub(crate) mod write;

pub(crate) use handshake::accept_tls;
pub(crate) use kicks::Kicks;
pub(crate) use register::register_session;
pub(crate) use slot::AddressSlot;
pub(crate) use write::{bounded_write, WriteError, GOODBYE};
