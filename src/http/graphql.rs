//! `POST /graphql` (and `GET` for queries), GraphiQL.

use async_graphql::ParseRequestError;
use async_graphql_axum::{GraphQLRequest, rejection::GraphQLRejection};
use axum::extract::{RawQuery, State};
use axum::http::header::{ACCEPT, ALLOW, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};

use super::AppState;
use super::errors::error_response;
use super::limits::{rate_limited, retry_seconds};
use crate::graphql::Viewer;
use crate::graphql::error::fill_codes;

/// `POST /graphql`: a JSON body, or the multipart request of the upload spec.
pub(super) async fn graphql_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Result<GraphQLRequest, GraphQLRejection>,
) -> Response {
    if !is_graphql_body(&headers) {
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "BAD_INPUT",
            "send GraphQL requests as application/json (or multipart/form-data for uploads)",
        );
    }
    match request {
        Ok(request) => run(state, Method::POST, &headers, request.into_inner()).await,
        Err(rejection) => rejected(rejection.0, state.max_request_bytes),
    }
}

/// The parameters of `GET /graphql`, read here rather than by async-graphql, whose
/// 7.2 parser ignores `operationName`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetParams {
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<String>,
    extensions: Option<String>,
}

/// `GET /graphql`: queries only (a link must not change data).
pub(super) async fn graphql_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params: GetParams = match serde_urlencoded::from_str(query.as_deref().unwrap_or("")) {
        Ok(params) => params,
        Err(e) => return bad_request(&format!("malformed query string: {e}")),
    };
    let Some(query) = params.query else {
        return bad_request("the `query` parameter is missing");
    };
    let mut request = async_graphql::Request::new(query);
    request.operation_name = params.operation_name;
    if let Some(variables) = params.variables.filter(|v| !v.is_empty()) {
        match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&variables) {
            Ok(map) => {
                request.variables =
                    async_graphql::Variables::from_json(serde_json::Value::Object(map))
            }
            Err(e) => return bad_request(&format!("`variables` must be a JSON object: {e}")),
        }
    }
    if let Some(extensions) = params.extensions.filter(|v| !v.is_empty())
        && serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&extensions).is_err()
    {
        return bad_request("`extensions` must be a JSON object");
    }
    run(state, Method::GET, &headers, request).await
}

/// Any other method on `/graphql`: 405 with `Allow` and the API's error shape.
pub(super) async fn graphql_other_method() -> Response {
    let mut response = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "BAD_INPUT",
        "send GraphQL requests with POST (or GET for queries)",
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static("GET, POST"));
    response
}

fn bad_request(message: &str) -> Response {
    error_response(StatusCode::BAD_REQUEST, "BAD_INPUT", message)
}

/// Runs one GraphQL request and answers it in the media type the client accepts.
async fn run(
    state: AppState,
    method: Method,
    headers: &HeaderMap,
    mut request: async_graphql::Request,
) -> Response {
    let media = ResponseMedia::of(headers);
    if request.query.trim().is_empty() {
        return bad_request("the `query` parameter is missing");
    }
    // First of all: nothing parses a query (or walks it) before its nesting is bounded.
    if let Err(error) = state.query_cache.prepare(&mut request) {
        return media.respond(async_graphql::Response::from_errors(vec![error]));
    }
    if method == Method::GET && is_mutation(&mut request) {
        let mut response = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "BAD_INPUT",
            "mutations must be sent with POST",
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let header = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let viewer = Viewer(state.auth.verify_header(header).await);
    if let Ok(user) = &viewer.0
        && is_mutation(&mut request)
        && let Err(wait) = state.limits.mutation(user)
    {
        let error = rate_limited("too many mutations; slow down", wait);
        let mut response = media.respond(async_graphql::Response::from_errors(vec![error]));
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        response
            .headers_mut()
            .insert(RETRY_AFTER, retry_seconds(wait).into());
        return response;
    }
    let query = request.query.clone();
    let operation = request.operation_name.clone();
    let mut response = state.schema.execute(request.data(viewer)).await;
    crate::graphql::mend_response(&query, operation.as_deref(), &mut response);
    media.respond(response)
}

/// The media type of a GraphQL response, from the request's `Accept` (GraphQL over
/// HTTP): `application/graphql-response+json` when the client lists it, else
/// `application/json` (also when `Accept` is absent or `*/*`).
#[derive(Clone, Copy, PartialEq)]
enum ResponseMedia {
    Json,
    GraphqlResponse,
}

impl ResponseMedia {
    fn of(headers: &HeaderMap) -> Self {
        let accepts_graphql_response = headers
            .get_all(ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|item| {
                let mut parts = item.split(';');
                let essence = parts.next().unwrap_or_default().trim();
                let refused = parts.any(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                essence.eq_ignore_ascii_case("application/graphql-response+json") && !refused
            });
        if accepts_graphql_response {
            Self::GraphqlResponse
        } else {
            Self::Json
        }
    }

    /// The response: codes filled in. A request that failed before execution (parse,
    /// validation, variable coercion: no data and no error with a path) is a 400 without
    /// `data` in `application/graphql-response+json`; `application/json` keeps the
    /// classic 200.
    fn respond(self, mut response: async_graphql::Response) -> Response {
        fill_codes(&mut response);
        let request_error = response.data == async_graphql::Value::Null
            && !response.errors.is_empty()
            && response.errors.iter().all(|e| e.path.is_empty());
        let mut status = StatusCode::OK;
        // Serialised as it is (a JSON value would sort the keys; GraphQL keeps the order
        // of the selection).
        let body = if request_error && self == Self::GraphqlResponse {
            status = StatusCode::BAD_REQUEST;
            serde_json::to_vec(&serde_json::json!({ "errors": response.errors }))
        } else {
            serde_json::to_vec(&response)
        }
        .unwrap_or_default();
        let media = match self {
            Self::Json => "application/json",
            Self::GraphqlResponse => "application/graphql-response+json",
        };
        let mut http = (status, body).into_response();
        http.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(media));
        for (name, value) in response.http_headers.iter() {
            http.headers_mut().append(name, value.clone());
        }
        http
    }
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

/// GraphiQL, served from the binary (React and GraphiQL included): it works where the
/// public CDN cannot be reached. Its scripts are files of this origin only.
pub(super) async fn graphiql() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_SECURITY_POLICY, GRAPHIQL_CSP)],
        Html(include_str!("graphiql/index.html")),
    )
}

const GRAPHIQL_CSP: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
     connect-src 'self' ws: wss:; worker-src 'self' blob:; frame-ancestors 'none'";

/// GraphiQL's assets, by name.
pub(super) async fn graphiql_asset(
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    let (body, content_type): (&'static [u8], &str) = match name.as_str() {
        "graphiql.min.js" => (
            include_bytes!("graphiql/graphiql.min.js"),
            "text/javascript",
        ),
        "graphiql.min.css" => (include_bytes!("graphiql/graphiql.min.css"), "text/css"),
        "react.production.min.js" => (
            include_bytes!("graphiql/react.production.min.js"),
            "text/javascript",
        ),
        "react-dom.production.min.js" => (
            include_bytes!("graphiql/react-dom.production.min.js"),
            "text/javascript",
        ),
        "start.js" => (include_bytes!("graphiql/start.js"), "text/javascript"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (CONTENT_TYPE, content_type),
            (axum::http::header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}
