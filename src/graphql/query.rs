use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, ID, Object};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::error::{IntoGql, bad_input};
use super::file_list::FileList;
use super::scalars::Cursor;
use super::types::{ChangePage, File, FileVersion, Space, User};
use super::upload_types::UploadStatus;
use super::{parse_id, service, viewer};

pub struct Query;

#[Object]
impl Query {
    /// The authenticated caller.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<User> {
        Ok(User {
            id: viewer(ctx)?.clone(),
        })
    }

    /// The spaces the caller belongs to, oldest first: at most `first` (default 100),
    /// those after the space `after`.
    #[graphql(complexity = "super::page_cost(first, child_complexity)")]
    async fn spaces(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<ID>,
    ) -> async_graphql::Result<Vec<Space>> {
        let after = after.as_ref().map(parse_id).transpose()?;
        let spaces = service(ctx)
            .spaces(viewer(ctx)?, first, after)
            .await
            .gql()?;
        Ok(spaces
            .into_iter()
            .map(|(space, role)| Space {
                space,
                role: Some(role),
            })
            .collect())
    }

    /// Where a space's replication stands, store by store (owners only): copies pending,
    /// failed and OK, the oldest pending one and the lag. Reads every copy record of the
    /// space.
    async fn replication_status(
        &self,
        ctx: &Context<'_>,
        space_id: ID,
    ) -> async_graphql::Result<super::replication::ReplicationStatus> {
        let space = parse_id(&space_id)?;
        Ok(service(ctx)
            .replication_status(viewer(ctx)?, space)
            .await
            .gql()?
            .into())
    }

    /// A space the caller belongs to; null otherwise.
    async fn space(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Space>> {
        let found = service(ctx)
            .space(viewer(ctx)?, parse_id(&id)?)
            .await
            .gql()?;
        Ok(found.map(|(space, role)| Space {
            space,
            role: Some(role),
        }))
    }

    /// The latest committed version of a file, or version `version`; null when there is
    /// no such file (or version) the caller may see.
    async fn file(
        &self,
        ctx: &Context<'_>,
        id: ID,
        version: Option<i32>,
    ) -> async_graphql::Result<Option<File>> {
        let file = service(ctx)
            .file(viewer(ctx)?, parse_id(&id)?, version)
            .await
            .gql()?;
        Ok(file.map(File))
    }

    /// Live files of a space ordered by name (case-insensitively unless the space is
    /// case-sensitive), optionally under a name prefix (compared as names are).
    #[graphql(complexity = "super::page_cost(first, child_complexity)")]
    async fn files(
        &self,
        ctx: &Context<'_>,
        space_id: ID,
        prefix: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, File>> {
        let after_name = after.as_deref().map(decode_name_cursor).transpose()?;
        let page = service(ctx)
            .files(
                viewer(ctx)?,
                parse_id(&space_id)?,
                prefix.as_deref(),
                first,
                after_name.as_deref(),
            )
            .await
            .gql()?;
        let mut connection = Connection::new(after.is_some(), page.has_next);
        connection.edges.extend(
            page.files
                .into_iter()
                .map(|(key, f)| Edge::new(URL_SAFE_NO_PAD.encode(key), File(f))),
        );
        Ok(connection)
    }

    /// A file's committed versions, oldest first: at most `first` (default 100), those
    /// numbered after `after`. `fileHistory` is the same as a connection, with
    /// `pageInfo`.
    #[graphql(complexity = "super::page_cost(first, child_complexity)")]
    async fn file_versions(
        &self,
        ctx: &Context<'_>,
        id: ID,
        first: Option<i32>,
        after: Option<i32>,
    ) -> async_graphql::Result<Vec<FileVersion>> {
        let (versions, _) = service(ctx)
            .file_versions(viewer(ctx)?, parse_id(&id)?, first, after)
            .await
            .gql()?;
        Ok(versions.into_iter().map(FileVersion).collect())
    }

    /// A file's committed versions, oldest first, as a connection: `first` (default
    /// 100) after the cursor `after`.
    #[graphql(complexity = "super::page_cost(first, child_complexity)")]
    async fn file_history(
        &self,
        ctx: &Context<'_>,
        id: ID,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, FileVersion>> {
        let after_version = after
            .as_deref()
            .map(|a| {
                a.parse::<i32>()
                    .map_err(|_| bad_input("malformed `after` cursor"))
            })
            .transpose()?;
        let (versions, more) = service(ctx)
            .file_versions(viewer(ctx)?, parse_id(&id)?, first, after_version)
            .await
            .gql()?;
        let mut connection = Connection::new(after.is_some(), more);
        connection.edges.extend(
            versions
                .into_iter()
                .map(|v| Edge::new(v.number.to_string(), FileVersion(v))),
        );
        Ok(connection)
    }

    /// Incremental sync: every file changed after `since` (all files when omitted), each
    /// once in its latest state, tombstones included, in change order.
    #[graphql(complexity = "super::page_cost(limit, child_complexity)")]
    async fn changes(
        &self,
        ctx: &Context<'_>,
        space_id: ID,
        since: Option<Cursor>,
        limit: Option<i32>,
    ) -> async_graphql::Result<ChangePage> {
        let page = service(ctx)
            .changes(
                viewer(ctx)?,
                parse_id(&space_id)?,
                since.as_ref().map(|c| c.0.as_str()),
                limit,
            )
            .await
            .gql()?;
        Ok(ChangePage {
            files: FileList(page.files.into_iter().map(File).collect()),
            next_cursor: page.next_cursor.into(),
            has_more: page.has_more,
        })
    }

    /// An upload as it stands, for its uploader (the token): for a pending multipart
    /// upload the parts the store holds and those still missing, so a client that
    /// crashed or reloaded sends only what is missing.
    async fn upload_status(
        &self,
        ctx: &Context<'_>,
        upload_id: ID,
        upload_token: String,
    ) -> async_graphql::Result<UploadStatus> {
        let status = service(ctx)
            .upload_status(viewer(ctx)?, parse_id(&upload_id)?, &upload_token)
            .await
            .gql()?;
        Ok(status.into())
    }
}

fn decode_name_cursor(after: &str) -> async_graphql::Result<String> {
    URL_SAFE_NO_PAD
        .decode(after)
        .ok()
        .and_then(|raw| String::from_utf8(raw).ok())
        .ok_or_else(|| bad_input("malformed `after` cursor"))
}
