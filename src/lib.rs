//! Filesync: a self-hostable GraphQL server for collaborative file sync.
//!
//! # Layout
//!
//! Layers, innermost first; each depends only on the ones before it:
//!
//! - [`domain`]: ids, names, files, versions, cursors. Plain validated data, no I/O.
//! - [`storage`]: the storage contract (metadata, blobs, change feed) and its backends;
//!   [`storage::embedded`] is SQLite + a local folder.
//! - [`sync`]: the use cases (upload, commit, modify, delete, restore, changes), written
//!   against the storage traits only.
//! - [`graphql`]: the schema; resolvers call one use case each and map errors to codes.
//! - [`http`]: the router, the GraphQL endpoint, the embedded blob endpoint, health and
//!   metrics.
//! - [`startup`]: builds the whole application from [`config::Settings`]; `main` only
//!   parses the command line and runs it.
//!
//! [`auth`] (tokens) and [`telemetry`] (logging) are used by the outer layers.

pub mod auth;
pub mod config;
pub mod domain;
pub mod graphql;
pub mod http;
pub mod startup;
pub mod storage;
pub mod sync;
pub mod telemetry;
