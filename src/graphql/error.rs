//! Errors mapped once, at the edge: every client-facing error carries a stable
//! `extensions.code`; internal causes are logged with the request id and never sent.

use async_graphql::{Error as GqlError, ErrorExtensions};

use crate::auth::AuthError;
use crate::sync::Error;

/// Turns a use-case result into a GraphQL result with its code.
pub trait IntoGql<T> {
    fn gql(self) -> async_graphql::Result<T>;
}

impl<T> IntoGql<T> for Result<T, Error> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(to_gql)
    }
}

pub fn to_gql(e: Error) -> GqlError {
    let code = e.code();
    match e {
        Error::Internal(cause) => {
            tracing::error!(error = ?cause, "internal error");
            GqlError::new("internal error").extend_with(|_, ext| ext.set("code", code))
        }
        Error::Conflict {
            ref message,
            current_version,
            file_id,
        } => GqlError::new(message.clone()).extend_with(|_, ext| {
            ext.set("code", code);
            ext.set("currentVersion", current_version);
            if let Some(id) = file_id {
                ext.set("fileId", id.to_string());
            }
        }),
        Error::PartsMissing { ref missing, count } => {
            GqlError::new(e.to_string()).extend_with(|_, ext| {
                ext.set("code", code);
                // The first thousand: a client sends those, then asks `uploadStatus`.
                ext.set(
                    "missingParts",
                    missing.iter().take(1000).copied().collect::<Vec<u32>>(),
                );
                ext.set("missingPartCount", count);
            })
        }
        Error::Verifying { retry_after_ms } => {
            GqlError::new(e.to_string()).extend_with(|_, ext| {
                ext.set("code", code);
                ext.set("retryAfterMs", retry_after_ms);
            })
        }
        other => GqlError::new(other.to_string()).extend_with(|_, ext| ext.set("code", code)),
    }
}

pub fn unauthenticated(e: &AuthError) -> GqlError {
    GqlError::new(e.to_string()).extend_with(|_, ext| ext.set("code", "UNAUTHENTICATED"))
}

pub fn bad_input(message: impl Into<String>) -> GqlError {
    to_gql(Error::BadInput(message.into()))
}

/// Errors raised by GraphQL itself (syntax, validation, wrong argument types, depth and
/// complexity limits) carry no code: they are all the client's to fix.
pub fn fill_codes(response: &mut async_graphql::Response) {
    for error in &mut response.errors {
        let extensions = error
            .extensions
            .get_or_insert_with(async_graphql::ErrorExtensionValues::default);
        if extensions.get("code").is_none() {
            extensions.set("code", async_graphql::Value::from("BAD_INPUT"));
        }
    }
}
