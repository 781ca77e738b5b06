//! The integration suite on PostgreSQL: the same modules as target `it` (tests/it/), each
//! test on a fresh database of a private cluster (module `pg`), started on first use. The
//! tests about SQLite itself skip here with a line saying why. Without PostgreSQL server
//! binaries the run stops at its first database, successfully, after one line saying so;
//! with `CI` set it fails instead.

/// The backend this run of the suite uses.
pub const BACKEND: common::Backend = common::Backend::Postgres;

#[path = "it/bad_input.rs"]
mod bad_input;
#[path = "it/bench_smoke.rs"]
mod bench_smoke;
#[path = "it/binaries.rs"]
mod binaries;
#[path = "it/common.rs"]
mod common;
#[path = "it/core.rs"]
mod core;
#[path = "it/crash.rs"]
mod crash;
#[path = "it/inbox.rs"]
mod inbox;
#[path = "it/irc.rs"]
mod irc;
#[path = "it/parity.rs"]
mod parity;
#[path = "it/pg.rs"]
mod pg;
#[path = "it/proofs.rs"]
mod proofs;
#[path = "it/props.rs"]
mod props;
#[path = "it/rooms.rs"]
mod rooms;
#[path = "it/store.rs"]
mod store;
#[path = "it/tui.rs"]
mod tui;
#[path = "it/usage.rs"]
mod usage;
