//! The verification link in emails is the VerifyEmail RPC's GET route. A browser (`Accept:
//! text/html`) gets a small page saying verified / expired / invalid; an API client gets JSON.

use axum::response::{Html, IntoResponse, Response};
use http::{HeaderMap, StatusCode};

use crate::error::GatewayError;

/// The one RPC whose answer has an HTML form.
pub const VERIFY_EMAIL_RPC: &str = "transactions.auth.v1.AuthService.VerifyEmail";

pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// The page for the outcome of the call.
pub fn page(result: &Result<Vec<u8>, GatewayError>) -> Response {
    let (status, title, text) = match result {
        Ok(_) => (
            StatusCode::OK,
            "Email verified",
            "Thank you: your email address is verified. Log in again (or renew your access token) \
             to move money."
                .to_owned(),
        ),
        Err(e) if e.reason.contains("expired") => (
            e.http_status(),
            "Link expired",
            "This verification link has expired. Log in and ask for a new verification email."
                .to_owned(),
        ),
        Err(e) if e.reason.ends_with("_used") => (
            e.http_status(),
            "Link already used",
            "This verification link has been used already. If you opened it before, your address \
             is verified; otherwise log in and ask for a new verification email."
                .to_owned(),
        ),
        Err(e) if e.http_status().is_server_error() => (
            e.http_status(),
            "Try again later",
            "We could not verify your email right now. Please open the link again in a few minutes."
                .to_owned(),
        ),
        Err(_) => (
            StatusCode::BAD_REQUEST,
            "Invalid link",
            "This verification link is not valid: it may have been used already or mistyped."
                .to_owned(),
        ),
    };
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem}}</style>\
         </head><body><h1>{title}</h1><p>{text}</p></body></html>\n"
    );
    (status, Html(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn text(resp: Response) -> (StatusCode, String) {
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn outcomes_have_their_own_pages() {
        let (s, t) = text(page(&Ok(b"{}".to_vec()))).await;
        assert_eq!(s, StatusCode::OK);
        assert!(t.contains("Email verified"));
        let expired = GatewayError::new(
            tonic::Code::FailedPrecondition,
            "verification_expired",
            "expired",
        );
        let (_, t) = text(page(&Err(expired))).await;
        assert!(t.contains("Link expired"));
        let invalid = GatewayError::new(tonic::Code::NotFound, "verification_not_found", "no");
        let used = GatewayError::new(tonic::Code::FailedPrecondition, "verification_used", "x");
        assert!(text(page(&Err(used))).await.1.contains("already used"));
        let (s, t) = text(page(&Err(invalid))).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(t.contains("Invalid link"));
    }
}
