use async_graphql::{Context, ID, Object, Upload};
use futures::TryStreamExt;

use super::error::{IntoGql, bad_input};
use super::types::{
    BeginUploadInput, File, Role, Space, SpaceSettingsInput, UpdateFileInput, UploadTicket,
    metadata_input,
};
use super::upload_types::{UploadPartInput, UploadPartUrl};
use super::{parse_id, service, viewer};
use crate::sync::{FileUpdate, NewUpload};

pub struct Mutation;

#[Object]
impl Mutation {
    /// Creates a space; the caller becomes its owner.
    async fn create_space(&self, ctx: &Context<'_>, name: String) -> async_graphql::Result<Space> {
        let space = service(ctx).create_space(viewer(ctx)?, &name).await.gql()?;
        Ok(Space {
            space,
            role: Some(crate::domain::Role::Owner),
        })
    }

    /// Adds or changes a member (owners only); a null role removes the member.
    async fn set_member(
        &self,
        ctx: &Context<'_>,
        space_id: ID,
        user_id: ID,
        role: Option<Role>,
    ) -> async_graphql::Result<Space> {
        let (space, role) = service(ctx)
            .set_member(
                viewer(ctx)?,
                parse_id(&space_id)?,
                &user_id,
                role.map(Into::into),
            )
            .await
            .gql()?;
        Ok(Space { space, role })
    }

    /// Replaces a space's settings: largest file, accepted content types and extensions
    /// (owners only).
    async fn update_space_settings(
        &self,
        ctx: &Context<'_>,
        space_id: ID,
        input: SpaceSettingsInput,
    ) -> async_graphql::Result<Space> {
        let user = viewer(ctx)?;
        let space_id = parse_id(&space_id)?;
        // Left out, how names compare and whether the space replicates stay as they are.
        let current = service(ctx).space_settings(user, space_id).await.gql()?;
        let case_sensitive = input
            .case_sensitive_names
            .unwrap_or(current.case_sensitive_names);
        let mut settings = crate::domain::SpaceSettings::parse(
            input.max_file_size.map(|s| s.0),
            input.allowed_content_types.unwrap_or_default(),
            input.allowed_extensions.unwrap_or_default(),
            case_sensitive,
        )
        .map_err(|e| bad_input(e.0))?;
        settings.replication = match input.replication {
            Some(mode) => mode.setting(),
            None => current.replication,
        };
        let (space, role) = service(ctx)
            .update_space_settings(user, space_id, settings)
            .await
            .gql()?;
        Ok(Space {
            space,
            role: Some(role),
        })
    }

    /// Starts a repair of the space's replication (owners only): the copies its versions
    /// lack are queued, and every store's copy is checked against its checksum, at the
    /// scrub's pace; what is missing or corrupt is copied again. Asking while a repair
    /// runs answers that one.
    async fn repair_space(
        &self,
        ctx: &Context<'_>,
        space_id: ID,
    ) -> async_graphql::Result<super::replication::ReplicationStatus> {
        let space = parse_id(&space_id)?;
        Ok(service(ctx)
            .repair_space(viewer(ctx)?, space)
            .await
            .gql()?
            .into())
    }

    /// Phase one of an upload: a pending version and a presigned URL to send the bytes to.
    async fn begin_upload(
        &self,
        ctx: &Context<'_>,
        input: BeginUploadInput,
    ) -> async_graphql::Result<UploadTicket> {
        let ticket = service(ctx)
            .begin_upload(viewer(ctx)?, new_upload(input)?)
            .await
            .gql()?;
        Ok(ticket.into())
    }

    /// URLs for parts of a multipart upload, at most `uploads.max_part_urls` (100) at a
    /// time: each pins its part's length and the SHA-256 given, and expires with
    /// `uploads.url_ttl` (ask again for a fresh one). Parts may be sent in any order and
    /// in parallel; a part sent twice counts as the last one stored.
    async fn upload_part_urls(
        &self,
        ctx: &Context<'_>,
        upload_id: ID,
        upload_token: String,
        parts: Vec<UploadPartInput>,
    ) -> async_graphql::Result<Vec<UploadPartUrl>> {
        let parts = parts
            .into_iter()
            .map(|p| (p.part_number, p.sha256))
            .collect();
        let urls = service(ctx)
            .upload_part_urls(viewer(ctx)?, parse_id(&upload_id)?, &upload_token, parts)
            .await
            .gql()?;
        Ok(urls.into_iter().map(Into::into).collect())
    }

    /// Phase three: verifies the bytes and publishes the version. Idempotent. A
    /// multipart upload is completed from the parts the store holds
    /// (`UPLOAD_INCOMPLETE` with `extensions.missingParts` when some are missing), then
    /// hashed whole: `UPLOAD_VERIFYING` (with `extensions.retryAfterMs`) while that takes
    /// longer than `uploads.commit_wait`: commit again.
    async fn commit_upload(
        &self,
        ctx: &Context<'_>,
        upload_id: ID,
        upload_token: String,
    ) -> async_graphql::Result<File> {
        let file = service(ctx)
            .commit_upload(viewer(ctx)?, parse_id(&upload_id)?, &upload_token)
            .await
            .gql()?;
        Ok(File(file))
    }

    /// Abandons a pending upload and deletes its bytes; false if it was already abandoned.
    async fn cancel_upload(
        &self,
        ctx: &Context<'_>,
        upload_id: ID,
        upload_token: String,
    ) -> async_graphql::Result<bool> {
        service(ctx)
            .cancel_upload(viewer(ctx)?, parse_id(&upload_id)?, &upload_token)
            .await
            .gql()
    }

    /// A new version with a new name and/or metadata and the same content.
    async fn update_file(
        &self,
        ctx: &Context<'_>,
        id: ID,
        base_version: i32,
        input: UpdateFileInput,
    ) -> async_graphql::Result<File> {
        let update = FileUpdate {
            name: input.name,
            metadata: metadata_input(input.metadata),
        };
        let file = service(ctx)
            .update_file(viewer(ctx)?, parse_id(&id)?, base_version, update)
            .await
            .gql()?;
        Ok(File(file))
    }

    /// Deletes a file (creator or space owner only); returns the tombstone.
    async fn delete_file(
        &self,
        ctx: &Context<'_>,
        id: ID,
        base_version: Option<i32>,
    ) -> async_graphql::Result<File> {
        let file = service(ctx)
            .delete_file(viewer(ctx)?, parse_id(&id)?, base_version)
            .await
            .gql()?;
        Ok(File(file))
    }

    /// Makes an old version current again (also undeletes a file).
    async fn restore_version(
        &self,
        ctx: &Context<'_>,
        id: ID,
        version: i32,
        base_version: i32,
    ) -> async_graphql::Result<File> {
        let file = service(ctx)
            .restore_version(viewer(ctx)?, parse_id(&id)?, version, base_version)
            .await
            .gql()?;
        Ok(File(file))
    }

    /// Uploads a small file in one request (GraphQL multipart request spec).
    async fn upload_file(
        &self,
        ctx: &Context<'_>,
        input: BeginUploadInput,
        content: Upload,
    ) -> async_graphql::Result<File> {
        let user = viewer(ctx)?;
        let value = content
            .value(ctx)
            .map_err(|_| bad_input("the `content` file part is missing"))?;
        let body = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(value.content));
        let file = service(ctx)
            .upload_inline(user, new_upload(input)?, Box::pin(body.map_err(Into::into)))
            .await
            .gql()?;
        Ok(File(file))
    }
}

fn new_upload(input: BeginUploadInput) -> async_graphql::Result<NewUpload> {
    Ok(NewUpload {
        space_id: parse_id(&input.space_id)?,
        file_id: input.file_id.as_ref().map(parse_id).transpose()?,
        name: input.name,
        size: input.size.0,
        sha256: input.sha256,
        content_type: input.content_type,
        base_version: input.base_version,
        metadata: metadata_input(input.metadata),
        method: input.method.map(Into::into),
    })
}
