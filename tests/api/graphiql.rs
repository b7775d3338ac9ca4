//! GraphiQL in real Chromium (Debian's package, driven by playwright-core from tests/js),
//! on a machine without internet: the page and its scripts come from the server itself,
//! its documentation explorer and autocompletion work (the introspection query passes
//! the depth limit), and a query runs. Screenshots go to target/screenshots/.

use std::path::Path;

use crate::helpers::spawn_app;
use crate::js_client::{install_client, js_dir};

#[tokio::test]
async fn graphiql_works_offline_with_docs_and_autocompletion() {
    install_client();
    let app = spawn_app().await;
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = tokio::process::Command::new("node")
        .arg(js_dir().join("graphiql.mjs"))
        .arg(&app.base)
        .arg(app.token("alice"))
        .arg(&shots)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "GraphiQL in Chromium: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let host = app.base.trim_start_matches("http://");
    let elsewhere: Vec<&serde_json::Value> = seen["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| *h != host)
        .collect();
    assert!(
        elsewhere.is_empty(),
        "the page asked other hosts: {elsewhere:?}"
    );
    assert_eq!(seen["failed"], serde_json::json!([]), "{seen}");
    let hints = seen["hints"].as_array().unwrap();
    assert!(
        hints.iter().any(|h| h == "spaces") && hints.iter().any(|h| h == "space"),
        "completions from the schema: {hints:?}"
    );
}
