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
pub mod nulls;
mod query;
mod query_cache;
pub mod replication;
mod subscription;

pub use query_cache::QueryCache;
pub mod scalars;
pub mod types;
pub mod upload_types;

pub use mutation::Mutation;
pub use query::Query;
pub use subscription::Subscription;

pub type FilesyncSchema = Schema<Query, Mutation, Subscription>;

/// What a page of store records costs in the complexity limit: its size (`first` or
/// `limit`, default 100, at most 1,000) times the cost of one item, each item counting
/// at least [`RECORD_COST`] (a record is read whole, whatever is selected of it). So the
/// limit bounds the records one request can read (`max_complexity / 10`) and what it can
/// select of them.
pub(crate) fn page_cost(asked: Option<i32>, child_complexity: usize) -> usize {
    // As asked (a size past `graphql.max_page_size` is refused when it runs); omitted,
    // the default page (raise `max_complexity` with `default_page_size`).
    let items = asked.map_or(100, |n| usize::try_from(n).unwrap_or(0).max(1));
    items.saturating_mul(child_complexity.saturating_add(RECORD_COST))
}

/// The least one record of a page costs (see [`page_cost`]).
pub(crate) const RECORD_COST: usize = 10;

/// Who is calling: the verified user, or why not. Put into each request's data.
#[derive(Debug, Clone)]
pub struct Viewer(pub Result<UserId, AuthError>);

/// Builds the schema with its limits and the service.
pub fn build_schema(service: SyncService, limits: &GraphqlSettings) -> FilesyncSchema {
    let builder = Schema::build(Query, Mutation, Subscription)
        .data(live::LiveRenderer::new(service.clone()))
        .data(service)
        // The depth limit proper is the query cache's, which lets the standard
        // introspection query through; this is a backstop for anything else.
        .limit_depth(limits.max_depth.max(query_cache::INTROSPECTION_DEPTH))
        .limit_complexity(limits.max_complexity);
    if limits.introspection {
        builder.finish()
    } else {
        builder.disable_introspection().finish()
    }
}

/// Mends a response where async-graphql differs from the spec (see [`nulls`]): when it
/// has errors, or its document (`query`) may skip fields.
pub fn mend_response(query: &str, operation: Option<&str>, response: &mut async_graphql::Response) {
    static TYPES: std::sync::OnceLock<nulls::Types> = std::sync::OnceLock::new();
    if response.errors.is_empty() && !query.contains('@') {
        return;
    }
    let Ok(doc) = async_graphql::parser::parse_query(query) else {
        return;
    };
    if response.errors.is_empty() && !nulls::uses_conditions(&doc) {
        return;
    }
    TYPES
        .get_or_init(|| nulls::Types::from_sdl(&sdl()))
        .mend(&doc, operation, response);
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
