//! The native front end: TLS 1.3 connections carrying length-prefixed JSON frames
//! (`docs/protocol.md`). `session` is one connection's state machine: it translates
//! requests into calls on the core ([`crate::core`]) and the core's answers and pushes into
//! frames ([`crate::protocol`] owns the encoding).

pub(crate) mod refusals;
pub(crate) mod session;
