//! Every error the gateway answers over HTTP, in one JSON shape (the `google.rpc.Status` mapping):
//! `{"code": <gRPC code number>, "message": "...", "details": [ErrorInfo{reason}, BadRequest{…}]}`.
//! Upstream statuses keep their reason and field violations; the gateway's own errors (no route,
//! bad JSON, limits, upstream down) get a reason of their own.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use tonic::Code;
use tonic_types::StatusExt;

/// The reason of a call that may have been applied (see [`GatewayError::outcome_unknown`]).
pub const OUTCOME_UNKNOWN: &str = "outcome_unknown";

/// The reason of a call that never reached its service (see [`GatewayError::upstream_unavailable`]).
pub const UPSTREAM_UNAVAILABLE: &str = "upstream_unavailable";

/// The `domain` of the gateway's own ErrorInfo.
pub const DOMAIN: &str = platform::error::ERROR_DOMAIN;

#[derive(Debug, Clone)]
pub struct GatewayError {
    pub code: Code,
    pub http: StatusCode,
    pub reason: String,
    pub message: String,
    pub violations: Vec<(String, String)>,
    pub retry_after_secs: Option<u64>,
    pub allow: Vec<http::Method>,
}

impl GatewayError {
    pub fn new(code: Code, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            http: http_status(code),
            reason: reason.to_owned(),
            message: message.into(),
            violations: Vec::new(),
            retry_after_secs: None,
            allow: Vec::new(),
        }
    }

    pub fn bad_json(message: &str) -> Self {
        Self::new(Code::InvalidArgument, "malformed_json", message)
    }

    pub fn invalid_field(field: &str, description: &str) -> Self {
        let mut e = Self::new(
            Code::InvalidArgument,
            "invalid_argument",
            format!("{field}: {description}"),
        );
        e.violations
            .push((field.to_owned(), description.to_owned()));
        e
    }

    /// A body that names one key twice in an object (`m` says which).
    pub fn duplicate_key(m: &str) -> Self {
        let key = m.split('`').nth(1).unwrap_or("body");
        let mut e = Self::new(
            Code::InvalidArgument,
            "duplicate_key",
            format!("malformed JSON: {m}"),
        );
        e.violations
            .push((key.to_owned(), "named more than once".to_owned()));
        e
    }

    /// A string field holding a control character (the rule of `platform::text`).
    pub fn invalid_text(field: &str) -> Self {
        let description = platform::text::REFUSED_CONTROLS;
        let mut e = Self::new(
            Code::InvalidArgument,
            platform::text::INVALID_TEXT,
            format!("{field}: {description}"),
        );
        e.violations
            .push((field.to_owned(), description.to_owned()));
        e
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        let shown: String = content_type.chars().take(100).collect();
        let mut e = Self::new(
            Code::InvalidArgument,
            "unsupported_media_type",
            format!("the request body must be JSON (application/json), not {shown}"),
        );
        e.http = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        e
    }

    /// The same reason and message as the services' own check (`platform::caller`).
    pub fn missing_token() -> Self {
        Self::new(
            Code::Unauthenticated,
            "missing_token",
            "missing authorization: send `Bearer <access token>`",
        )
    }

    pub fn route_not_found(method: &http::Method, path: &str) -> Self {
        Self::new(
            Code::NotFound,
            "route_not_found",
            format!("no route for {method} {path}"),
        )
    }

    pub fn method_not_allowed(allow: Vec<http::Method>) -> Self {
        let list = allow
            .iter()
            .map(http::Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let mut e = Self::new(
            Code::Unimplemented,
            "method_not_allowed",
            format!("method not allowed here; allowed: {list}"),
        );
        e.http = StatusCode::METHOD_NOT_ALLOWED;
        e.allow = allow;
        e
    }

    pub fn body_too_large(limit: usize) -> Self {
        let mut e = Self::new(
            Code::InvalidArgument,
            "body_too_large",
            format!("the request body is larger than {limit} bytes"),
        );
        e.http = StatusCode::PAYLOAD_TOO_LARGE;
        e
    }

    pub fn body_read_timeout() -> Self {
        let mut e = Self::new(
            Code::DeadlineExceeded,
            "body_read_timeout",
            "the request body did not arrive in time",
        );
        e.http = StatusCode::REQUEST_TIMEOUT;
        e
    }

    pub fn headers_too_large(limit: usize) -> Self {
        let mut e = Self::new(
            Code::InvalidArgument,
            "headers_too_large",
            format!("the request headers are larger than {limit} bytes"),
        );
        e.http = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
        e
    }

    fn headers_too_large_upstream() -> Self {
        let mut e = Self::new(
            Code::InvalidArgument,
            "headers_too_large",
            "the request headers are larger than the service accepts",
        );
        e.http = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
        e
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            Code::ResourceExhausted,
            "rate_limited",
            "too many requests from this address; retry later",
        );
        e.retry_after_secs = Some(retry_after_secs.max(1));
        e
    }

    pub fn overloaded() -> Self {
        let mut e = Self::new(
            Code::Unavailable,
            "gateway_overloaded",
            "the gateway is at its concurrency limit; retry later",
        );
        e.retry_after_secs = Some(1);
        e
    }

    /// The upstream got the request and then the call broke (its connection reset or closed,
    /// the process gone) or never ended: it may or may not have been applied. Only a retry with
    /// the same idempotency key can tell, and it is safe.
    pub fn outcome_unknown() -> Self {
        let mut e = Self::new(
            Code::Unavailable,
            OUTCOME_UNKNOWN,
            "the connection to the service broke after the request was sent; it may or may not \
             have been applied: retry with the same Idempotency-Key, whose answer says which",
        );
        e.retry_after_secs = Some(1);
        e
    }

    /// The request never reached the upstream (no connection, or the stream refused before
    /// any processing): nothing was applied; a retry is safe.
    pub fn upstream_unavailable() -> Self {
        let mut e = Self::new(
            Code::Unavailable,
            UPSTREAM_UNAVAILABLE,
            "the service is unavailable; nothing was applied: retry later",
        );
        e.retry_after_secs = Some(1);
        e
    }

    /// What a failed upstream call tells the client. A status the upstream answered keeps its
    /// meaning ([`Self::from_status`]); one tonic made from a transport failure (it carries the
    /// error as its source) is `upstream_unavailable` when the request provably never reached the
    /// service, else `outcome_unknown`: never a 500 or a 504 for what may have been applied.
    pub fn from_call(status: &tonic::Status) -> Self {
        if std::error::Error::source(status).is_none() {
            return match status.code() {
                // the gateway never cancels: a cancel is the upstream enforcing the deadline we
                // sent (tonic's server answers an expired grpc-timeout that way)
                Code::Cancelled => Self::upstream_timeout(),
                _ => Self::from_status(status),
            };
        }
        if never_sent(status) {
            tracing::warn!(error = %status.message(), "upstream unreachable");
            Self::upstream_unavailable()
        } else {
            tracing::warn!(code = ?status.code(), error = %status.message(), "upstream call broke after it was sent");
            Self::outcome_unknown()
        }
    }

    pub fn upstream_timeout() -> Self {
        Self::new(
            Code::DeadlineExceeded,
            "upstream_timeout",
            "the service did not answer in time",
        )
    }

    /// An upstream's status: its code, message, reason and field violations.
    pub fn from_status(status: &tonic::Status) -> Self {
        let details = status.get_error_details();
        let reason = details.error_info().map(|i| i.reason.clone());
        let code = status.code();
        if reason.is_none() && is_header_limit(status) {
            // the upstream's HTTP/2 header limit, which tonic reports as Unknown (the HTTP 431
            // it answered) or as an h2 protocol error: the client's headers, not a failure here
            return Self::headers_too_large_upstream();
        }
        let (reason, message) = match (reason, code) {
            (Some(r), _) => (r, status.message().to_owned()),
            // no ErrorInfo: a transport failure or a status we did not produce; do not leak its text
            (None, Code::Unavailable) => (
                "upstream_unavailable".to_owned(),
                "the service is unavailable; retry later".to_owned(),
            ),
            (None, Code::DeadlineExceeded) => (
                "upstream_timeout".to_owned(),
                "the service did not answer in time".to_owned(),
            ),
            (None, Code::Unimplemented) => (
                "unimplemented".to_owned(),
                "this operation is not implemented yet".to_owned(),
            ),
            (None, Code::Internal | Code::Unknown | Code::DataLoss) => {
                tracing::warn!(code = ?code, message = status.message(), "upstream failure");
                ("internal".to_owned(), "internal error".to_owned())
            }
            (None, _) => (snake(code), status.message().to_owned()),
        };
        let mut e = Self::new(code, &reason, message);
        if let Some(bad) = details.bad_request() {
            e.violations = bad
                .field_violations
                .iter()
                .map(|v| (v.field.clone(), v.description.clone()))
                .collect();
        }
        e.retry_after_secs = details
            .retry_info()
            .and_then(|r| r.retry_delay)
            .map(|d| d.as_secs().max(1));
        e
    }

    pub fn http_status(&self) -> StatusCode {
        self.http
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }

    pub fn field_violations(&self) -> &[(String, String)] {
        &self.violations
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut details = vec![json!({
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": self.reason,
            "domain": DOMAIN,
            "metadata": {},
        })];
        if !self.violations.is_empty() {
            details.push(json!({
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "field_violations": self.violations.iter().map(|(f, d)| json!({
                    "field": f, "description": d,
                })).collect::<Vec<_>>(),
            }));
        }
        if let Some(secs) = self.retry_after_secs {
            details.push(json!({
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retry_delay": format!("{secs}s"),
            }));
        }
        json!({
            "code": self.code as i32,
            "message": self.message,
            "details": details,
        })
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut resp = (self.http, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self.retry_after_secs
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            headers.insert(header::RETRY_AFTER, v);
        }
        if !self.allow.is_empty() {
            let list = self
                .allow
                .iter()
                .map(http::Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            if let Ok(v) = HeaderValue::from_str(&list) {
                headers.insert(header::ALLOW, v);
            }
        }
        resp
    }
}

/// Whether a transport failure proves the request never reached the upstream:
/// - the connection could not be made (tonic's `ConnectError` in the chain), or the channel was
///   not ready to take the call (`NotSent`);
/// - hyper never handed the request to the connection (`is_canceled`: "connection was not ready",
///   or the connection closed with the request still queued);
/// - the upstream's graceful GOAWAY (NO_ERROR) covered it: h2 gives that error only to streams
///   above the GOAWAY's last stream id, which RFC 9113 §6.8 says were not processed, and to
///   streams opened after it, which were never sent. This is the race of a draining upstream: a
///   call the gateway sent on the connection just as the upstream said GOAWAY (it was
///   `outcome_unknown`, as tonic maps it to INTERNAL);
/// - or HTTP/2 refused the stream (REFUSED_STREAM: "not processed", the only h2 reason tonic
///   maps to UNAVAILABLE).
pub(crate) fn never_sent(status: &tonic::Status) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = cause {
        if e.is::<tonic::ConnectError>() || e.is::<NotSent>() {
            return true;
        }
        if let Some(e) = e.downcast_ref::<hyper::Error>()
            && e.is_canceled()
        {
            return true;
        }
        if let Some(e) = e.downcast_ref::<h2::Error>()
            && e.is_go_away()
            && e.is_remote()
            && e.reason() == Some(h2::Reason::NO_ERROR)
        {
            return true;
        }
        cause = e.source();
    }
    status.code() == Code::Unavailable && status.message().starts_with("h2 protocol error")
}

/// A status tonic made from an upstream refusing the request's headers: the HTTP 431 an HTTP/2
/// server answers (mapped to Unknown), or the h2 reset of a header list beyond its limit.
fn is_header_limit(status: &tonic::Status) -> bool {
    let message = status.message();
    match status.code() {
        Code::Unknown => message.ends_with("HTTP status code 431"),
        Code::ResourceExhausted | Code::Internal => {
            message.contains("h2 protocol error") && message.contains("header")
        }
        _ => false,
    }
}

/// The standard gRPC → HTTP mapping (as grpc-gateway does it).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::BAD_REQUEST,
        Code::Aborted => StatusCode::CONFLICT,
        Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
    }
}

fn snake(code: Code) -> String {
    let name = format!("{code:?}");
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The channel could not take the call (its connection failed before the request was handed to
/// it): the request was certainly not sent.
#[derive(Debug)]
pub(crate) struct NotSent(pub(crate) tonic::codegen::StdError);

impl std::fmt::Display for NotSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "upstream not ready: {}", self.0)
    }
}

impl std::error::Error for NotSent {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use platform::ApiError;

    #[test]
    fn upstream_status_keeps_reason_and_violations() {
        let status = ApiError::invalid_field("username", "too short").into_status();
        let e = GatewayError::from_status(&status);
        assert_eq!(e.http_status(), StatusCode::BAD_REQUEST);
        let body = e.body();
        assert_eq!(body["code"], 3);
        assert_eq!(body["details"][0]["reason"], "invalid_argument");
        assert_eq!(
            body["details"][1]["field_violations"][0]["field"],
            "username"
        );
    }

    #[test]
    fn standard_mapping_of_codes() {
        for (code, http) in [
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::Aborted, 409),
            (Code::ResourceExhausted, 429),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
            (Code::FailedPrecondition, 400),
        ] {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn transport_failures_do_not_leak_their_text() {
        let e = GatewayError::from_status(&tonic::Status::unavailable(
            "tcp connect error: 10.0.0.3:50051 refused",
        ));
        assert_eq!(e.http_status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.reason(), "upstream_unavailable");
        assert!(!e.body().to_string().contains("10.0.0.3"));
    }

    #[test]
    fn an_upstream_header_limit_is_431_not_500() {
        let e = GatewayError::from_status(&tonic::Status::unknown(
            "grpc-status header missing, mapped from HTTP status code 431",
        ));
        assert_eq!(e.http_status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(e.reason(), "headers_too_large");
        // any other HTTP status without a grpc-status stays a server error
        let e = GatewayError::from_status(&tonic::Status::unknown(
            "grpc-status header missing, mapped from HTTP status code 418",
        ));
        assert_eq!(e.http_status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn a_transport_failure_after_sending_is_outcome_unknown_and_before_it_unavailable() {
        let broken = tonic::Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        )));
        assert_eq!(
            broken.code(),
            Code::Unknown,
            "what tonic makes of it: a 500 before"
        );
        let e = GatewayError::from_call(&broken);
        assert_eq!(e.http_status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.reason(), "outcome_unknown");
        assert!(
            e.body()["message"]
                .as_str()
                .unwrap()
                .contains("Idempotency-Key")
        );
        let refused = tonic::Status::from_error(Box::new(tonic::ConnectError(Box::new(
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
        ))));
        let e = GatewayError::from_call(&refused);
        assert_eq!(e.http_status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.reason(), "upstream_unavailable");
        // an answer of the upstream keeps its meaning
        let answered = tonic::Status::cancelled("Timeout expired");
        assert_eq!(
            GatewayError::from_call(&answered).reason(),
            "upstream_timeout"
        );
    }

    #[test]
    fn retry_info_becomes_retry_after() {
        let status = ApiError::new(Code::ResourceExhausted, "resend_too_soon", "wait")
            .with_retry_after(30)
            .into_status();
        let resp = GatewayError::from_status(&status).into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "30");
    }
}
