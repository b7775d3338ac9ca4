//! `POST /graphql` (and `GET` for queries), GraphiQL.

use async_graphql::ParseRequestError;
use async_graphql::http::GraphiQLSource;
use async_graphql_axum::{GraphQLRequest, GraphQLResponse, rejection::GraphQLRejection};
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, RETRY_AFTER};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};

use super::AppState;
use super::errors::error_response;
use super::limits::{rate_limited, retry_seconds};
use crate::graphql::Viewer;
use crate::graphql::error::fill_codes;

pub(super) async fn graphql_handler(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    request: Result<GraphQLRequest, GraphQLRejection>,
) -> Response {
    if method == Method::POST && !is_graphql_body(&headers) {
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "BAD_INPUT",
            "send GraphQL requests as application/json (or multipart/form-data for uploads)",
        );
    }
    let mut request = match request {
        Ok(request) => request.into_inner(),
        Err(rejection) => return rejected(rejection.0, state.max_request_bytes),
    };
    if method == Method::GET && is_mutation(&mut request) {
        return error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "BAD_INPUT",
            "mutations must be sent with POST",
        );
    }
    if let Err(error) = state.query_cache.prepare(&mut request) {
        let mut response = async_graphql::Response::from_errors(vec![error]);
        fill_codes(&mut response);
        return GraphQLResponse::from(response).into_response();
    }
    let header = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let viewer = Viewer(state.auth.verify_header(header).await);
    if let Ok(user) = &viewer.0
        && is_mutation(&mut request)
        && let Err(wait) = state.limits.mutation(user)
    {
        let error = rate_limited("too many mutations; slow down", wait);
        let mut response = GraphQLResponse::from(async_graphql::Response::from_errors(vec![error]))
            .into_response();
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        response
            .headers_mut()
            .insert(RETRY_AFTER, retry_seconds(wait).into());
        return response;
    }
    let mut response = state.schema.execute(request.data(viewer)).await;
    fill_codes(&mut response);
    GraphQLResponse::from(response).into_response()
}

/// A body that is not a GraphQL request at all.
fn rejected(error: ParseRequestError, max_bytes: u64) -> Response {
    match error {
        ParseRequestError::PayloadTooLarge => too_large(max_bytes),
        ParseRequestError::Io(e) if is_length_limit(&e) => too_large(max_bytes),
        other => error_response(
            StatusCode::BAD_REQUEST,
            "BAD_INPUT",
            &format!("not a GraphQL request: {other}"),
        ),
    }
}

/// The body-limit layer answers 413 with a plain-text body; give it the API's JSON shape.
pub(super) async fn coded_body_limit(
    State(state): State<AppState>,
    response: Response,
) -> Response {
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/json"));
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        return too_large(state.max_request_bytes);
    }
    response
}

fn too_large(max_bytes: u64) -> Response {
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        &format!("the request body is larger than {max_bytes} bytes"),
    )
}

fn is_length_limit(e: &std::io::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.get_ref().map(|e| e as _);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Whether a POST body is of a type GraphQL requests come in: JSON, or the multipart
/// request of the upload spec.
fn is_graphql_body(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    [
        "application/json",
        "application/graphql-request+json",
        "multipart/form-data",
    ]
    .iter()
    .any(|allowed| essence.eq_ignore_ascii_case(allowed))
}

/// Whether the operation the request would run is a mutation.
pub(super) fn is_mutation(request: &mut async_graphql::Request) -> bool {
    use async_graphql::parser::types::{DocumentOperations, OperationType};
    let operation_name = request.operation_name.clone();
    let Ok(doc) = request.parsed_query() else {
        return false; // execution reports the syntax error
    };
    let is_mut =
        |op: &async_graphql::parser::types::OperationDefinition| op.ty == OperationType::Mutation;
    match &doc.operations {
        DocumentOperations::Single(op) => is_mut(&op.node),
        DocumentOperations::Multiple(ops) => match &operation_name {
            Some(name) => ops.get(name.as_str()).is_some_and(|op| is_mut(&op.node)),
            None => ops.values().any(|op| is_mut(&op.node)),
        },
    }
}

pub(super) async fn graphiql() -> impl IntoResponse {
    // The page loads GraphiQL from its CDN and runs inline scripts; it may not be framed.
    (
        [(
            axum::http::header::CONTENT_SECURITY_POLICY,
            "frame-ancestors 'none'",
        )],
        Html(
            GraphiQLSource::build()
                .endpoint("/graphql")
                .subscription_endpoint("/graphql/ws")
                .finish(),
        ),
    )
}
