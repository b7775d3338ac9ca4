//! `filesync-sync` keeps a local folder and a Filesync space in sync.
//!
//! It follows the design of Dropbox's sync engine: three trees per file, keyed by the
//! server's file id rather than by path: the **remote** tree (what the server holds), the
//! **local** tree (what the folder holds) and the **base** tree (what both last agreed
//! on). The plan is a pure function of the three ([`plan::plan`]); the executor only
//! carries it out, recording each step in the state as it lands, so a crash at any
//! point leaves a state the next pass plans from correctly.
//!
//! # Layout
//!
//! - [`paths`]: `RelPath`, a file's name as the server and the folder both spell it;
//!   conflict-copy names.
//! - [`tree`]: the three trees' entries (remote file, base file, local file).
//! - [`plan`]: the planner: trees in, actions out; no I/O.
//! - [`state`]: the SQLite state in `.filesync/` (base tree, cursor, pending work,
//!   problems, conflict copies).
//! - [`scan`]: walks the folder, fingerprints and hashes files, honours
//!   `.filesyncignore`.
//! - [`api`]: the GraphQL API over HTTP and the `changes` subscription over websocket.
//! - [`exec`]: carries a plan out: local moves and deletes, downloads, uploads.
//! - [`pass`]: one sync pass (fetch, scan, plan, execute, save the cursor).
//! - [`watch`]: `watch`: passes driven by the subscription, a filesystem watcher and a
//!   periodic rescan.
//! - [`report`]: what the user sees (lines, progress bars, quiet mode).
//! - [`folder`]: the folder's setup (`init`, the token, the lock).
//! - [`failure`]: errors a run can end with, and their exit codes.

pub mod api;
pub mod exec;
pub mod failure;
pub mod folder;
pub mod pass;
pub mod paths;
pub mod plan;
pub mod report;
pub mod scan;
pub mod state;
pub mod tree;
pub mod watch;
