//! Integration tests on SQLite: one test binary (links once), one module per area. Target
//! `it_pg` (tests/it_pg.rs) runs the same modules on PostgreSQL.

/// The backend this run of the suite uses.
pub const BACKEND: common::Backend = common::Backend::Sqlite;

mod bad_input;
mod bench_smoke;
mod binaries;
mod cluster;
mod common;
mod core;
mod crash;
mod inbox;
mod irc;
mod parity;
mod pg;
mod proofs;
mod props;
mod rooms;
mod store;
mod tui;
mod usage;
