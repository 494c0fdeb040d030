//! The one error type of the HTTP edge and its one mapping to responses (DECISIONS 2): every error
//! is `{"error": CODE, "message": TEXT}` (validation adds `details`), every 429 has `Retry-After`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::{Access, Rejection};
use crate::deploy::DeployError;
use crate::invocation::InvokeError;
use crate::queue::RejectReason;
use crate::registry::RegistryError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("Request validation failed")]
    Validation(Vec<String>),
    #[error("{0}")]
    BadRequest(String),
    /// No token, or one that is not in the token file: 401 with `WWW-Authenticate: Bearer`.
    #[error("{}", unauthorized_message(.invalid_token))]
    Unauthorized { invalid_token: bool },
    /// A known token without the scope the route needs.
    #[error("This operation needs a token with the {scope} scope")]
    Forbidden { scope: &'static str },
    #[error("{0}")]
    NotFound(String),
    /// No route matches the path (the framework's 404 in Java, REFERENCE §1.4).
    #[error("No static resource {}.", .0.trim_start_matches('/'))]
    RouteNotFound(String),
    #[error("Method not allowed")]
    MethodNotAllowed,
    /// Answered for hyper's parser (src/server/parse_error.rs), which reaches no handler.
    #[error("Request URI is too long")]
    UriTooLong,
    #[error("Request header fields are too large")]
    HeadersTooLarge,
    /// The request body did not arrive within the body read timeout.
    #[error("The request body did not arrive in time")]
    BodyReadTimeout,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("Rate limit exceeded")]
    RateLimited,
    #[error("{0}")]
    QueueFull(String),
    #[error("Sync queue rejected the invocation ({})", .reason.as_str())]
    SyncQueueRejected {
        reason: RejectReason,
        retry_after_seconds: u32,
    },
    #[error("{0}")]
    NotImplemented(String),
    #[error("{0}")]
    ServiceUnavailable(String),
    /// The shared state backend (NATS) cannot be reached now: 503 with `Retry-After`, as the
    /// client reconnects by itself (docs/ha.md).
    #[error("{0}")]
    StateUnavailable(String),
    #[error("{0}")]
    Overloaded(String),
    #[error("{0}")]
    ImageNotFound(String),
    #[error("{0}")]
    ImagePullAuthRequired(String),
    #[error("{0}")]
    ImageRegistryUnavailable(String),
    #[error("{0}")]
    BadGateway(String),
    #[error("An unexpected error occurred")]
    Internal,
}

fn unauthorized_message(invalid_token: &bool) -> &'static str {
    if *invalid_token {
        "Invalid bearer token"
    } else {
        "Authentication required: send Authorization: Bearer <token>"
    }
}

/// `Retry-After` while the state backend is unreachable: about one reconnect attempt of the client.
pub const STATE_RETRY_AFTER_SECONDS: u32 = 2;

/// The error body of every API error (DECISIONS 2).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub(crate) struct ErrorBody<'a> {
    /// A code such as `NOT_FOUND`, `VALIDATION_ERROR`, `RATE_LIMITED`, or Spring's
    /// `"<status> <REASON>"` for framework errors (`405 METHOD_NOT_ALLOWED`).
    #[schema(value_type = String)]
    error: &'a str,
    message: String,
    /// Validation failures only: `"<field>: <message>"` each.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>, nullable = false)]
    details: Option<&'a [String]>,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) | ApiError::RouteNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UriTooLong => StatusCode::URI_TOO_LONG,
            ApiError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::BodyReadTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited | ApiError::QueueFull(_) | ApiError::SyncQueueRejected { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::ServiceUnavailable(_)
            | ApiError::StateUnavailable(_)
            | ApiError::Overloaded(_)
            | ApiError::ImageRegistryUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::ImageNotFound(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::ImagePullAuthRequired(_) => StatusCode::FAILED_DEPENDENCY,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Validation(_) => "VALIDATION_ERROR",
            ApiError::BadRequest(_) => "BAD_REQUEST",
            ApiError::Unauthorized { .. } => "UNAUTHORIZED",
            ApiError::Forbidden { .. } => "FORBIDDEN",
            ApiError::NotFound(_) => "NOT_FOUND",
            // Errors the Java service left to Spring carry Spring's `"<code> <REASON>"` (§1.4).
            ApiError::RouteNotFound(_) => "404 NOT_FOUND",
            ApiError::MethodNotAllowed => "405 METHOD_NOT_ALLOWED",
            ApiError::UriTooLong => "414 URI_TOO_LONG",
            ApiError::HeadersTooLarge => "431 REQUEST_HEADER_FIELDS_TOO_LARGE",
            ApiError::BodyReadTimeout => "408 REQUEST_TIMEOUT",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE",
            ApiError::UnsupportedMediaType(_) => "415 UNSUPPORTED_MEDIA_TYPE",
            ApiError::RateLimited => "RATE_LIMITED",
            ApiError::QueueFull(_) => "QUEUE_FULL",
            ApiError::SyncQueueRejected { .. } => "SYNC_QUEUE_REJECTED",
            ApiError::NotImplemented(_) => "NOT_IMPLEMENTED",
            ApiError::ServiceUnavailable(_) | ApiError::StateUnavailable(_) => {
                "SERVICE_UNAVAILABLE"
            }
            ApiError::Overloaded(_) => "OVERLOADED",
            ApiError::ImageNotFound(_) => "IMAGE_NOT_FOUND",
            ApiError::ImagePullAuthRequired(_) => "IMAGE_PULL_AUTH_REQUIRED",
            ApiError::ImageRegistryUnavailable(_) => "IMAGE_REGISTRY_UNAVAILABLE",
            ApiError::BadGateway(_) => "BAD_GATEWAY",
            ApiError::Internal => "INTERNAL_ERROR",
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 §3): bare for a missing token, with the error
    /// code for a bad token or a missing scope.
    fn challenge(&self) -> Option<&'static str> {
        match self {
            ApiError::Unauthorized {
                invalid_token: false,
            } => Some(r#"Bearer realm="nanofaas""#),
            ApiError::Unauthorized {
                invalid_token: true,
            } => Some(r#"Bearer realm="nanofaas", error="invalid_token""#),
            ApiError::Forbidden { .. } => {
                Some(r#"Bearer realm="nanofaas", error="insufficient_scope""#)
            }
            _ => None,
        }
    }

    fn retry_after(&self) -> Option<u32> {
        match self {
            ApiError::RateLimited | ApiError::QueueFull(_) | ApiError::Overloaded(_) => Some(1),
            ApiError::StateUnavailable(_) => Some(STATE_RETRY_AFTER_SECONDS),
            ApiError::SyncQueueRejected {
                retry_after_seconds,
                ..
            } => Some(*retry_after_seconds),
            _ => None,
        }
    }
}

impl ApiError {
    /// The JSON body: `{"error", "message"}`, with `details` for validation errors.
    pub fn body(&self) -> Vec<u8> {
        let details = match self {
            ApiError::Validation(d) => Some(d.as_slice()),
            _ => None,
        };
        let body = ErrorBody {
            error: self.code(),
            message: self.to_string(),
            details,
        };
        serde_json::to_vec(&body).unwrap_or_else(|_| {
            br#"{"error":"INTERNAL_ERROR","message":"An unexpected error occurred"}"#.to_vec()
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let json = self.body();
        let mut response = (
            self.status(),
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            json,
        )
            .into_response();
        if let Some(seconds) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(challenge) = self.challenge() {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if let ApiError::SyncQueueRejected { reason, .. } = &self {
            response.headers_mut().insert(
                "X-Queue-Reject-Reason",
                HeaderValue::from_static(reason.as_str()),
            );
        }
        response
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Invalid(details) => ApiError::Validation(details),
            RegistryError::BadRequest(message) => ApiError::BadRequest(message),
            e @ RegistryError::AlreadyExists(_) => ApiError::Conflict(e.to_string()),
            e @ RegistryError::NotFound(_) => ApiError::NotFound(e.to_string()),
            RegistryError::Unavailable(message) => ApiError::StateUnavailable(message),
            RegistryError::Deploy(e) => e.into(),
        }
    }
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> Self {
        match e {
            DeployError::Unavailable(m) => ApiError::ServiceUnavailable(m),
            DeployError::Failed(m) => ApiError::BadGateway(m),
            DeployError::ImageNotFound(m) => ApiError::ImageNotFound(m),
            DeployError::ImagePullAuthRequired(m) => ApiError::ImagePullAuthRequired(m),
            DeployError::ImageRegistryUnavailable(m) => ApiError::ImageRegistryUnavailable(m),
            DeployError::Conflict(m) => ApiError::Conflict(m),
        }
    }
}

impl From<InvokeError> for ApiError {
    fn from(e: InvokeError) -> Self {
        match e {
            InvokeError::RateLimited => ApiError::RateLimited,
            e @ (InvokeError::FunctionNotFound(_) | InvokeError::ExecutionNotFound(_)) => {
                ApiError::NotFound(e.to_string())
            }
            e @ InvokeError::NotDeadLetter(_) => ApiError::Conflict(e.to_string()),
            e @ InvokeError::QueueFull(_) => ApiError::QueueFull(e.to_string()),
            e @ InvokeError::AsyncDisabled => ApiError::NotImplemented(e.to_string()),
            e @ (InvokeError::StoreFull | InvokeError::FunctionShareFull(_)) => {
                ApiError::Overloaded(e.to_string())
            }
            e @ InvokeError::StateUnavailable(_) => ApiError::StateUnavailable(e.to_string()),
            InvokeError::SyncQueueRejected {
                reason,
                retry_after_seconds,
            } => ApiError::SyncQueueRejected {
                reason,
                retry_after_seconds,
            },
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::Missing => ApiError::Unauthorized {
                invalid_token: false,
            },
            Rejection::Invalid => ApiError::Unauthorized {
                invalid_token: true,
            },
            Rejection::InsufficientScope(access) => ApiError::Forbidden {
                scope: match access {
                    Access::Scope(scope) => scope.as_str(),
                    Access::AdminOrInvoke | Access::Open => "admin or invoke",
                },
            },
        }
    }
}
