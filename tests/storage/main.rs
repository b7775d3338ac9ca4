//! The storage contract, checked through the traits the sync layer uses
//! (`MetadataStore`, `BlobStore`), on whichever backend this run is for: the embedded one
//! (SQLite + a local folder) always, and the AWS one (DynamoDB + S3 in the emulator, a
//! CloudFormation stack per test) with `TEST_BACKEND=aws`, as `scripts/test` runs it.
//! The invariants are those ARCHITECTURE.md lists under "The storage contract".
//!
//! Presigned URLs are a contract with S3 itself; `strict_s3` checks them against s3s-fs,
//! a server that, unlike moto, verifies signatures, expiry, lengths and checksums.

#[path = "../common/aws_stack.rs"]
mod aws_stack;
mod blobs;
mod copies;
mod metadata;
mod strict_s3;

use filesync::config::StorageSettings;
use filesync::storage::url_signing::UrlSigner;
use filesync::storage::{OpenContext, Storage};
use tempfile::TempDir;

/// An opened backend of its own, and what it keeps alive.
pub struct Backend {
    pub storage: Storage,
    _dir: TempDir,
}

impl std::ops::Deref for Backend {
    type Target = Storage;

    fn deref(&self) -> &Storage {
        &self.storage
    }
}

pub fn on_aws() -> bool {
    std::env::var("TEST_BACKEND").is_ok_and(|b| b == "aws")
}

/// A fresh, empty backend of the kind this run is for.
pub async fn backend() -> Backend {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = StorageSettings {
        data_dir: dir.path().to_owned(),
        ..Default::default()
    };
    if on_aws() {
        aws_stack::use_stack(&mut settings, dir.path());
    }
    let ctx = OpenContext {
        public_url: "http://127.0.0.1:9".to_owned(),
        url_signer: UrlSigner::derive(b"storage contract tests"),
    };
    let storage = filesync::storage::open(&settings, ctx)
        .await
        .expect("the backend opens");
    Backend { storage, _dir: dir }
}
