//! Integration tests: one test binary (links once), one module per area.

mod bad_input;
mod bench_smoke;
mod binaries;
mod cluster;
mod common;
mod core;
mod crash;
mod inbox;
mod irc;
mod migrate;
mod parity;
mod pg;
mod proofs;
mod props;
mod rooms;
mod store;
mod tui;
mod usage;
