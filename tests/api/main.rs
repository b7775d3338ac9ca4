//! API tests: each test spawns the real server on port 0 with a fresh data dir and talks
//! to it over HTTP, as a client would.

mod access;
#[path = "../common/aws_stack.rs"]
mod aws_stack;
mod bad_input;
mod changes;
mod cli;
mod concurrency;
mod crash;
mod failures;
mod fuzz;
mod graphiql;
mod helpers;
mod hostile;
mod http_audit;
mod js_client;
mod limits;
mod live;
mod memory;
mod model;
mod modify;
mod multipart;
mod names;
mod ops;
mod post_form;
mod process;
mod races;
mod replicas;
mod replication;
mod restart;
mod schema;
mod space_settings;
mod tokens;
mod uploads;
mod web_app;
mod ws_client;
mod ws_protocol;
