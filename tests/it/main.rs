//! Integration tests: one test binary (links once), one module per area.

mod common;
mod core;
mod bad_input;
mod binaries;
