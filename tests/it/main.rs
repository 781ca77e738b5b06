//! Integration tests: one test binary (links once), one module per area.

mod bad_input;
mod binaries;
mod common;
mod core;
