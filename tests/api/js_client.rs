//! The real `graphql-ws` npm client (tests/js) against the server: what browser and Node
//! apps use. Needs Node; installs the client into tests/js/node_modules on first run.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::helpers::{TestApp, spawn_app};
use crate::live::spawn_writers;
use crate::ws_client::EVENT_FIELDS;

pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

/// `npm ci` once per test run, unless the packages are already installed.
pub fn install_client() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let installed = ["graphql-ws", "graphql-http"].iter().all(|p| {
            js_dir()
                .join(format!("node_modules/{p}/package.json"))
                .exists()
        });
        if installed {
            return;
        }
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(js_dir())
            .status()
            .expect("npm runs (Node 20 is needed for this test)");
        assert!(status.success(), "npm ci in tests/js failed");
    });
}

/// `tests/js/subscribe.mjs` running one subscription; its output, line by line.
struct JsSubscriber {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl JsSubscriber {
    fn start(app: &TestApp, token: &str, query: &str, variables: Value, count: usize) -> Self {
        install_client();
        let config = json!({
            "url": app.ws_url(), "token": token, "query": query,
            "variables": variables, "count": count,
        });
        let mut child = Command::new("node")
            .arg(js_dir().join("subscribe.mjs"))
            .arg(config.to_string())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self { child, lines }
    }

    async fn line(&mut self) -> Value {
        let line = tokio::time::timeout(std::time::Duration::from_secs(30), self.lines.next_line())
            .await
            .expect("the client prints in time")
            .expect("read")
            .expect("the client prints a line before exiting");
        serde_json::from_str(&line).expect("a JSON line")
    }

    async fn exit_code(mut self) -> Option<i32> {
        self.child.wait().await.expect("node exits").code()
    }
}

#[tokio::test]
async fn the_graphql_ws_npm_client_sees_every_change_in_order() {
    let app = Arc::new(spawn_app().await);
    let space = app.create_space("alice", "Team").await;
    let file = app.upload_id("alice", &space, "hot.txt", b"v1").await;
    let query = format!("subscription($s: ID!) {{ changes(spaceId: $s) {{ {EVENT_FIELDS} }} }}");
    let mut js = JsSubscriber::start(
        &app,
        &app.token("alice"),
        &query,
        json!({ "s": space }),
        100,
    );
    let ready = js.line().await;
    assert_eq!(ready["next"]["data"]["changes"]["kind"], "READY", "{ready}");

    let writers = spawn_writers(&app, &file, 4, 100);
    let mut versions = Vec::new();
    while versions.len() < 100 {
        let line = js.line().await;
        let event = &line["next"]["data"]["changes"];
        assert!(line["next"].get("errors").is_none(), "{line}");
        assert_eq!(event["kind"], "UPDATED", "{line}");
        versions.push(event["version"].as_i64().unwrap());
    }
    assert_eq!(versions, (2..=101).collect::<Vec<_>>());
    assert_eq!(js.exit_code().await, Some(0), "the client finished cleanly");
    for w in writers {
        w.await.unwrap();
    }
}

#[tokio::test]
async fn the_graphql_ws_npm_client_reports_refusals() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    let query = format!("subscription($s: ID!) {{ changes(spaceId: $s) {{ {EVENT_FIELDS} }} }}");

    let mut js = JsSubscriber::start(&app, "forged", &query, json!({ "s": space }), 1);
    let line = js.line().await;
    assert_eq!(line["error"]["closeCode"], 4403, "{line}");
    assert_eq!(js.exit_code().await, Some(1));

    let mut js = JsSubscriber::start(
        &app,
        &app.token("mallory"),
        &query,
        json!({ "s": space }),
        1,
    );
    let line = js.line().await;
    assert_eq!(
        line["error"]["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{line}"
    );
    assert_eq!(js.exit_code().await, Some(1));
}
