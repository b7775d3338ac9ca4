//! The operations, one method each.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Api, ApiError, FILE_FIELDS, Result, parse_file};
use crate::paths::RelPath;
use crate::tree::RemoteFile;

/// A space as this client needs it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpaceInfo {
    pub id: String,
    pub name: String,
    /// `OWNER`, `EDITOR` or `VIEWER`.
    pub role: Option<String>,
    pub head_cursor: String,
    #[serde(default)]
    pub case_sensitive_names: bool,
}

/// What `beginUpload` hands back (kept in the state database while a multipart upload
/// is under way, so that a later run resumes it).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    pub upload_id: String,
    pub upload_token: String,
    pub file_id: String,
    pub url: String,
    /// `PUT`, or `MULTIPART`: parts to the URLs of `uploadPartUrls`.
    pub method: String,
    pub headers: Vec<Field>,
    pub form_fields: Vec<Field>,
    #[serde(default)]
    pub part_size: Option<u64>,
    #[serde(default)]
    pub part_count: Option<u32>,
}

impl Ticket {
    pub fn is_multipart(&self) -> bool {
        self.method == "MULTIPART"
    }
}

/// Where to send one part.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartUrl {
    pub part_number: u32,
    pub url: String,
    pub headers: Vec<Field>,
}

/// The parts of a multipart upload the server holds.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadStatus {
    /// `PENDING`, `COMMITTED` or `ABANDONED`.
    pub state: String,
    pub missing_parts: Vec<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Field {
    pub name: String,
    pub value: String,
}

/// A page of `changes`.
pub struct ChangePage {
    pub files: Vec<RemoteFile>,
    pub next_cursor: String,
    pub has_more: bool,
}

/// A page of the listing.
pub struct FilePage {
    pub files: Vec<RemoteFile>,
    pub end_cursor: Option<String>,
}

fn field<T: serde::de::DeserializeOwned>(value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| ApiError::Protocol(e.to_string()))
}

impl Api {
    /// The user the token names.
    pub async fn me(&self) -> Result<String> {
        let data = self.graphql("{ me { id } }", json!({})).await?;
        field(data["me"]["id"].clone())
    }

    /// The space, or `None` when the caller is not a member (or it does not exist).
    pub async fn space(&self, id: &str) -> Result<Option<SpaceInfo>> {
        let data = self
            .graphql(
                "query($id: ID!) { space(id: $id) {
                    id name role headCursor settings { caseSensitiveNames } } }",
                json!({ "id": id }),
            )
            .await?;
        let mut space = data["space"].clone();
        if space.is_null() {
            return Ok(None);
        }
        space["caseSensitiveNames"] = space["settings"]["caseSensitiveNames"].take();
        field(space).map(Some)
    }

    /// Creates a space (the caller becomes its owner); its id.
    pub async fn create_space(&self, name: &str) -> Result<String> {
        let data = self
            .graphql(
                "mutation($n: String!) { createSpace(name: $n) { id } }",
                json!({ "n": name }),
            )
            .await?;
        field(data["createSpace"]["id"].clone())
    }

    /// Files changed since `since` (every file when `None`), each in its latest state.
    pub async fn changes(&self, space: &str, since: Option<&str>) -> Result<ChangePage> {
        let query = format!(
            "query($s: ID!, $since: Cursor) {{ changes(spaceId: $s, since: $since, limit: 500) {{
                files {{ {FILE_FIELDS} }} nextCursor hasMore }} }}"
        );
        let mut data = self
            .graphql(&query, json!({ "s": space, "since": since }))
            .await?;
        let page = &mut data["changes"];
        let files = match page["files"].take() {
            Value::Array(files) => files.into_iter().map(parse_file).collect::<Result<_>>()?,
            _ => return Err(ApiError::Protocol("changes without files".into())),
        };
        Ok(ChangePage {
            files,
            next_cursor: field(page["nextCursor"].take())?,
            has_more: field(page["hasMore"].take())?,
        })
    }

    /// A page of the space's live files, in name order.
    pub async fn files(&self, space: &str, after: Option<&str>) -> Result<FilePage> {
        let query = format!(
            "query($s: ID!, $after: String) {{ files(spaceId: $s, first: 500, after: $after) {{
                nodes {{ {FILE_FIELDS} }} pageInfo {{ hasNextPage endCursor }} }} }}"
        );
        let mut data = self
            .graphql(&query, json!({ "s": space, "after": after }))
            .await?;
        let page = &mut data["files"];
        let files = match page["nodes"].take() {
            Value::Array(files) => files.into_iter().map(parse_file).collect::<Result<_>>()?,
            _ => return Err(ApiError::Protocol("files without nodes".into())),
        };
        let more: bool = field(page["pageInfo"]["hasNextPage"].take())?;
        Ok(FilePage {
            files,
            end_cursor: more
                .then(|| page["pageInfo"]["endCursor"].as_str().map(str::to_owned))
                .flatten(),
        })
    }

    /// A fresh download URL for a version.
    pub async fn download_url(&self, id: &str, version: i64) -> Result<String> {
        let data = self
            .graphql(
                "query($id: ID!, $v: Int) { file(id: $id, version: $v) { downloadUrl } }",
                json!({ "id": id, "v": version }),
            )
            .await?;
        data["file"]["downloadUrl"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ApiError::NotFound(format!("version {version} of the file")))
    }

    /// Phase one of an upload.
    pub async fn begin_upload(
        &self,
        space: &str,
        id: Option<&str>,
        name: &RelPath,
        size: u64,
        sha256: &str,
        base_version: Option<i64>,
    ) -> Result<Ticket> {
        let content_type = mime_guess::from_path(name.file_name())
            .first()
            .map(|m| m.essence_str().to_owned());
        let data = self
            .graphql(
                "mutation($input: BeginUploadInput!) { beginUpload(input: $input) {
                    uploadId uploadToken fileId url method
                    headers { name value } formFields { name value } partSize partCount } }",
                json!({ "input": {
                    "spaceId": space, "fileId": id, "name": name.as_str(), "size": size,
                    "sha256": sha256, "contentType": content_type, "baseVersion": base_version,
                } }),
            )
            .await?;
        field(data["beginUpload"].clone())
    }

    /// URLs for parts of a multipart upload, each pinning the part's SHA-256.
    pub async fn upload_part_urls(
        &self,
        ticket: &Ticket,
        parts: &[(u32, String)],
    ) -> Result<Vec<PartUrl>> {
        let parts: Vec<Value> = parts
            .iter()
            .map(|(n, sha)| json!({ "partNumber": n, "sha256": sha }))
            .collect();
        let data = self
            .graphql(
                "mutation($u: ID!, $t: String!, $p: [UploadPartInput!]!) {
                    uploadPartUrls(uploadId: $u, uploadToken: $t, parts: $p) {
                        partNumber url headers { name value } } }",
                json!({ "u": ticket.upload_id, "t": ticket.upload_token, "p": parts }),
            )
            .await?;
        field(data["uploadPartUrls"].clone())
    }

    /// The parts of a multipart upload the server holds, and those it misses.
    pub async fn upload_status(&self, ticket: &Ticket) -> Result<UploadStatus> {
        let data = self
            .graphql(
                "query($u: ID!, $t: String!) { uploadStatus(uploadId: $u, uploadToken: $t) {
                    state missingParts } }",
                json!({ "u": ticket.upload_id, "t": ticket.upload_token }),
            )
            .await?;
        field(data["uploadStatus"].clone())
    }

    /// Phase three. Idempotent, so it is tried again when the answer is lost, and while
    /// the server is still verifying a multipart upload's whole content.
    pub async fn commit_upload(&self, ticket: &Ticket) -> Result<RemoteFile> {
        let query = format!(
            "mutation($u: ID!, $t: String!) {{ commitUpload(uploadId: $u, uploadToken: $t) {{
                {FILE_FIELDS} }} }}"
        );
        let vars = json!({ "u": ticket.upload_id, "t": ticket.upload_token });
        let mut attempt = 0;
        loop {
            match self.graphql(&query, vars.clone()).await {
                Ok(mut data) => return parse_file(data["commitUpload"].take()),
                Err(ApiError::Refused { code, .. }) if code == "UPLOAD_VERIFYING" => {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(e) if e.is_transient() && attempt < 3 => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(500 << attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Gives an upload up (best effort: the server sweeps what is left).
    pub async fn cancel_upload(&self, ticket: &Ticket) {
        let _ = self
            .graphql(
                "mutation($u: ID!, $t: String!) { cancelUpload(uploadId: $u, uploadToken: $t) }",
                json!({ "u": ticket.upload_id, "t": ticket.upload_token }),
            )
            .await;
    }

    pub async fn rename(&self, id: &str, base_version: i64, to: &RelPath) -> Result<RemoteFile> {
        let query = format!(
            "mutation($id: ID!, $b: Int!, $n: String!) {{
                updateFile(id: $id, baseVersion: $b, input: {{ name: $n }}) {{ {FILE_FIELDS} }} }}"
        );
        let mut data = self
            .graphql(
                &query,
                json!({ "id": id, "b": base_version, "n": to.as_str() }),
            )
            .await?;
        parse_file(data["updateFile"].take())
    }

    pub async fn delete(&self, id: &str, base_version: i64) -> Result<RemoteFile> {
        let query = format!(
            "mutation($id: ID!, $b: Int) {{ deleteFile(id: $id, baseVersion: $b) {{ {FILE_FIELDS} }} }}"
        );
        let mut data = self
            .graphql(&query, json!({ "id": id, "b": base_version }))
            .await?;
        parse_file(data["deleteFile"].take())
    }
}
