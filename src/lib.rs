#![forbid(unsafe_code)]
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod protocol;
pub mod server;
pub mod store;
pub mod tls;
