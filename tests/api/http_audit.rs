//! GraphQL over HTTP, audited by the spec's own suite (`graphql-http`'s server audits,
//! run with Node from tests/js): every MUST and every SHOULD passes.

use crate::helpers::spawn_app;
use crate::js_client::{install_client, js_dir};

#[tokio::test]
async fn the_graphql_over_http_audit_passes_every_must_and_should() {
    install_client();
    let app = spawn_app().await;
    let out = tokio::process::Command::new("node")
        .arg(js_dir().join("audit.mjs"))
        .arg(format!("{}/graphql", app.base))
        .output()
        .await
        .expect("node runs the audit");
    assert!(
        out.status.success(),
        "the audit ran: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(results.len() > 30, "the whole suite ran: {results:?}");
    let failed: Vec<String> = results
        .iter()
        .filter(|r| r["status"] == "error" || r["status"] == "warn")
        .map(|r| format!("{} ({}): {}", r["name"], r["status"], r["reason"]))
        .collect();
    assert!(failed.is_empty(), "audits failed:\n{}", failed.join("\n"));
    for notice in results.iter().filter(|r| r["status"] == "notice") {
        eprintln!("MAY not taken: {}", notice["name"]);
    }
}
