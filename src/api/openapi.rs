//! The API description (OpenAPI 3.1) generated from the handlers' `#[utoipa::path]` annotations
//! and the DTOs' `ToSchema` derives, served at `GET /v3/api-docs` (springdoc's path). The error
//! answers shared by several routes are the reusable responses below; `docs/openapi.md` lists how
//! this document differs from the published `openapi-java.yaml`.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr};
use utoipa::{Modify, OpenApi};

use super::{dead_letters, functions, invocations, management, runtime_config};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "nanofaas control plane API",
        description = "Function registration and invocation (REFERENCE §1). Errors are JSON \
                       `{error, message}`; 401/403 only when authentication is enabled. On any \
                       path, a method not listed for it answers 405 (`MethodNotAllowed`, with \
                       `Allow`) and an unknown path 404 (`404 NOT_FOUND`).",
    ),
    paths(
        functions::list,
        functions::register,
        functions::get,
        functions::delete,
        functions::set_replicas,
        invocations::invoke,
        invocations::enqueue,
        invocations::get_execution,
        dead_letters::list,
        dead_letters::redrive,
        invocations::complete,
        runtime_config::get_config,
        runtime_config::patch_config,
        runtime_config::validate_config,
        management::build_metadata,
        api_docs,
    ),
    components(responses(
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        PayloadTooLarge,
        UnsupportedMediaType,
        TooManyRequests,
        Overloaded,
        DeploymentUnavailable,
        MethodNotAllowed,
    )),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

/// Paths present only when their module is mounted.
const RUNTIME_CONFIG_PATHS: [&str; 2] = [
    "/v1/admin/runtime-config",
    "/v1/admin/runtime-config/validate",
];

/// The document for this instance: the admin runtime-config routes are listed only when mounted.
pub fn document(runtime_config_enabled: bool) -> Document {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    if !runtime_config_enabled {
        for path in RUNTIME_CONFIG_PATHS {
            doc.paths.paths.remove(path);
        }
    }
    doc
}

/// The document serialised once, at router construction.
pub fn document_json(runtime_config_enabled: bool) -> String {
    document(runtime_config_enabled)
        .to_json()
        .unwrap_or_else(|_| "{}".to_owned())
}

/// This API description (OpenAPI 3.1).
#[utoipa::path(
    get,
    path = "/v3/api-docs",
    tag = "meta",
    responses((status = 200, description = "This document (OpenAPI 3.1)",
               content_type = "application/json", body = Object)),
)]
pub async fn api_docs(body: bytes::Bytes) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// An error answer several routes share, as a reusable response (`response = NotFound` in a
/// path annotation refers to `#/components/responses/NotFound`).
macro_rules! shared_response {
    ($name:ident, $description:expr $(, $header:literal => $header_schema:expr)*) => {
        pub struct $name;

        impl<'s> utoipa::ToResponse<'s> for $name {
            fn response() -> (&'s str, RefOr<utoipa::openapi::Response>) {
                let response = error_response($description)
                    $(.header($header, $header_schema))*;
                (stringify!($name), response.build().into())
            }
        }
    };
}

shared_response!(
    BadRequest,
    "Invalid request: malformed JSON, a wrong type, a failed validation (`VALIDATION_ERROR` \
     with `details`) or a bad header"
);
shared_response!(
    Unauthorized,
    "No valid bearer token (only when authentication is enabled)",
    "WWW-Authenticate" => string_header("`Bearer`")
);
shared_response!(
    Forbidden,
    "The token lacks the scope this route needs (only when authentication is enabled)"
);
shared_response!(NotFound, "No such function or execution (`NOT_FOUND`)");
shared_response!(
    PayloadTooLarge,
    "The body is larger than the configured limit (`PAYLOAD_TOO_LARGE`)"
);
shared_response!(
    UnsupportedMediaType,
    "The body is not sent as `application/json` or `application/*+json`"
);
shared_response!(
    TooManyRequests,
    "`RATE_LIMITED` (the global rate limit) or `QUEUE_FULL` (the function's queue)",
    "Retry-After" => integer_header(RETRY_AFTER)
);
shared_response!(
    Overloaded,
    "`OVERLOADED`: the execution store is full of executions in flight",
    "Retry-After" => integer_header(RETRY_AFTER)
);
shared_response!(
    DeploymentUnavailable,
    "`SERVICE_UNAVAILABLE`: no deployment backend can serve the function (the message says how \
     to configure one), or the backend cannot be reached"
);

shared_response!(
    MethodNotAllowed,
    "`405 METHOD_NOT_ALLOWED`: the path exists, the method does not (any operation's path)",
    "Allow" => string_header("The methods the resource takes, e.g. `GET,HEAD,DELETE`")
);

fn error_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Error")))
            .build(),
    )
}

fn integer_header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0)),
        )
        .description(Some(description))
        .build()
}

fn string_header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String))
        .description(Some(description))
        .build()
}

const RETRY_AFTER: &str = "Seconds to wait before retrying";

/// The bearer scheme of the authentication layer (off by default: every protected route also
/// accepts no credentials, which the operations say with an empty security requirement).
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "Only when authentication is enabled: a token with scope `admin` or \
                         `invoke`",
                    ))
                    .build(),
            ),
        );
    }
}
