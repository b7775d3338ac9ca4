//! For tests on the AWS backend: a CloudFormation stack of their own in the emulator,
//! deployed by the operators' own script (`scripts/deploy_stack.py`).

use std::path::Path;

use filesync::config::{Backend, StorageSettings};
use serde_json::Value;

/// Points `storage` at a stack of its own, deployed on first use of `dir`; the script's
/// output is kept in `dir/aws-stack.json`, so that a restarted app reuses the stack.
pub fn use_stack(storage: &mut StorageSettings, dir: &Path) {
    let stack_file = dir.join("aws-stack.json");
    if !stack_file.exists() {
        let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = std::process::Command::new(root.join("target/aws-emulator/venv/bin/python"))
            .arg(root.join("scripts/deploy_stack.py"))
            .args(["--prefix", &prefix, "--format", "json"])
            .output()
            .expect("run scripts/deploy_stack.py (scripts/aws-emulator install)");
        assert!(
            out.status.success(),
            "stack deploy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&stack_file, &out.stdout).unwrap();
    }
    let stack: Value = serde_json::from_slice(&std::fs::read(&stack_file).unwrap()).unwrap();
    let text = |key: &str| stack[key].as_str().expect("stack output").to_owned();
    storage.backend = Backend::Aws;
    storage.table = text("FILESYNC_STORAGE__TABLE");
    storage.bucket = Some(text("FILESYNC_STORAGE__BUCKET"));
    storage.events_queue_url = Some(text("FILESYNC_STORAGE__EVENTS_QUEUE_URL"));
    storage.notices_topic_arn = Some(text("FILESYNC_STORAGE__NOTICES_TOPIC_ARN"));
    storage.replica_queue_prefix = text("FILESYNC_STORAGE__REPLICA_QUEUE_PREFIX");
    storage.s3_path_style = true;
}
