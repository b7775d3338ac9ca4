//! The GraphQL API: schema assembly and the roots. Resolvers parse arguments, call one use
//! case of `sync`, and map its errors with their codes (`error`). Nothing here names a
//! storage backend.

use async_graphql::{Context, Schema};

use crate::auth::AuthError;
use crate::config::GraphqlSettings;
use crate::domain::UserId;
use crate::sync::SyncService;

pub mod error;
mod file_list;
pub mod live;
mod mutation;
mod query;
mod query_cache;
mod subscription;

pub use query_cache::QueryCache;
pub mod scalars;
pub mod types;

pub use mutation::Mutation;
pub use query::Query;
pub use subscription::Subscription;

pub type FilesyncSchema = Schema<Query, Mutation, Subscription>;

/// Who is calling: the verified user, or why not. Put into each request's data.
#[derive(Debug, Clone)]
pub struct Viewer(pub Result<UserId, AuthError>);

/// Builds the schema with its limits and the service.
pub fn build_schema(service: SyncService, limits: &GraphqlSettings) -> FilesyncSchema {
    let builder = Schema::build(Query, Mutation, Subscription)
        .data(live::LiveRenderer::new(service.clone()))
        .data(service)
        .limit_depth(limits.max_depth)
        .limit_complexity(limits.max_complexity);
    if limits.introspection {
        builder.finish()
    } else {
        builder.disable_introspection().finish()
    }
}

/// The schema's SDL, as `filesync print-schema` prints it and `schema.graphql` holds it.
pub fn sdl() -> String {
    Schema::build(Query, Mutation, Subscription).finish().sdl()
}

pub(crate) fn service<'a>(ctx: &Context<'a>) -> &'a SyncService {
    ctx.data_unchecked::<SyncService>()
}

/// The authenticated caller, or `UNAUTHENTICATED`.
pub(crate) fn viewer<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a UserId> {
    match ctx.data_opt::<Viewer>() {
        Some(Viewer(Ok(user))) => Ok(user),
        Some(Viewer(Err(e))) => Err(error::unauthenticated(e)),
        None => Err(error::unauthenticated(&AuthError::Missing)),
    }
}

/// Parses an id argument, or `BAD_INPUT` saying what kind of id was expected.
pub(crate) fn parse_id<T: std::str::FromStr>(id: &async_graphql::ID) -> async_graphql::Result<T>
where
    T::Err: std::fmt::Display,
{
    id.parse::<T>().map_err(|e| error::bad_input(e.to_string()))
}
