//! Who is calling: the verified identity from the `authorization` metadata, and the request facts
//! the edge gateway forwards (client IP, user agent, request id, idempotency key).

use std::sync::Arc;

use tonic::{Code, metadata::MetadataMap};
use uuid::Uuid;

use crate::{
    error::ApiError,
    token::{Role, TokenError, TokenMaker},
};

/// Metadata the gateway sets to the client IP it saw (never copied from a client's header).
pub const CLIENT_IP: &str = "x-client-ip";
/// Metadata the gateway sets to the HTTP client's user agent.
pub const CLIENT_USER_AGENT: &str = "x-client-user-agent";
pub const REQUEST_ID: &str = "x-request-id";
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub username: String,
    pub role: Role,
    pub session_id: Uuid,
    pub email_verified: bool,
}

impl Caller {
    pub fn is_banker(&self) -> bool {
        self.role == Role::Banker
    }

    /// PERMISSION_DENIED unless the caller is a banker.
    pub fn require_banker(&self) -> Result<(), ApiError> {
        if self.is_banker() {
            Ok(())
        } else {
            Err(ApiError::permission_denied(
                "banker_only",
                "only a banker may do this",
            ))
        }
    }
}

/// Verifies the bearer token in `authorization` and returns the caller.
pub fn authenticate(
    metadata: &MetadataMap,
    tokens: &Arc<dyn TokenMaker>,
) -> Result<Caller, ApiError> {
    let header = metadata
        .get("authorization")
        .ok_or_else(|| {
            ApiError::unauthenticated(
                "missing_token",
                "missing authorization: send `Bearer <access token>`",
            )
        })?
        .to_str()
        .map_err(|_| {
            ApiError::unauthenticated("invalid_token", "authorization is not valid text")
        })?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or_else(|| {
            ApiError::unauthenticated(
                "invalid_authorization_scheme",
                "authorization must be `Bearer <access token>`",
            )
        })?
        .trim();
    let claims = tokens.verify(token).map_err(|e| match e {
        TokenError::Expired => {
            ApiError::unauthenticated("token_expired", "the access token has expired; renew it")
        }
        TokenError::WrongType => {
            ApiError::unauthenticated("token_wrong_type", "not an access token")
        }
        TokenError::Revoked => ApiError::unauthenticated(
            "token_revoked",
            "the access token's session was revoked or changed: renew it or log in again",
        ),
        _ => ApiError::unauthenticated("token_invalid", "the access token is invalid"),
    })?;
    Ok(Caller {
        username: claims.sub,
        role: claims.role,
        session_id: claims.sid,
        email_verified: claims.email_verified,
    })
}

fn text(metadata: &MetadataMap, key: &str) -> Option<String> {
    metadata
        .get(key)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// The client IP: what the gateway saw, else the peer address of the gRPC connection.
pub fn client_ip<T>(request: &tonic::Request<T>) -> String {
    text(request.metadata(), CLIENT_IP)
        .or_else(|| request.remote_addr().map(|a| a.ip().to_string()))
        .unwrap_or_default()
}

/// The client's user agent: what the gateway forwarded, else the gRPC user agent.
pub fn user_agent(metadata: &MetadataMap) -> String {
    let ua = text(metadata, CLIENT_USER_AGENT)
        .or_else(|| text(metadata, "user-agent"))
        .unwrap_or_default();
    ua.chars().take(512).collect()
}

/// The idempotency key from metadata, or `fallback` (a request field); bounded to 255 characters.
pub fn idempotency_key(metadata: &MetadataMap, fallback: &str) -> Result<Option<String>, ApiError> {
    let key = match metadata.get(IDEMPOTENCY_KEY) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::invalid_field("idempotency-key", "must be printable ASCII"))?
                .trim()
                .to_owned(),
        ),
        None => Some(fallback.trim().to_owned()),
    }
    .filter(|k| !k.is_empty());
    if key.as_ref().is_some_and(|k| k.chars().count() > 255) {
        return Err(ApiError::invalid_field(
            "idempotency-key",
            "at most 255 characters",
        ));
    }
    Ok(key)
}

/// Convenience for handlers: `Err(ApiError)` → `Err(Status)`.
pub type RpcResult<T> = Result<tonic::Response<T>, tonic::Status>;

/// Is this status a client-visible one we produced (vs a transport failure)?
pub fn is_client_error(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::FailedPrecondition
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::OutOfRange
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenKind;
    use crate::token::{Claims, Keys};
    use std::time::Duration;

    #[test]
    fn bearer_token_gives_the_caller() {
        let keys = Keys::generate();
        let maker = keys.maker(TokenKind::Paseto);
        let sid = Uuid::new_v4();
        let token = maker
            .sign(&Claims::access(
                "bob",
                Role::Banker,
                sid,
                false,
                Duration::from_secs(60),
            ))
            .unwrap();
        let mut md = MetadataMap::new();
        md.insert("authorization", format!("Bearer {token}").parse().unwrap());
        let caller = authenticate(&md, &maker).unwrap();
        assert_eq!(caller.username, "bob");
        assert!(caller.is_banker());
        assert_eq!(caller.session_id, sid);
        assert!(!caller.email_verified);
    }

    #[test]
    fn missing_or_malformed_authorization_is_unauthenticated() {
        let maker = Keys::generate().maker(TokenKind::Paseto);
        let md = MetadataMap::new();
        assert_eq!(
            authenticate(&md, &maker).unwrap_err().reason,
            "missing_token"
        );
        let mut md = MetadataMap::new();
        md.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(
            authenticate(&md, &maker).unwrap_err().reason,
            "invalid_authorization_scheme"
        );
        let mut md = MetadataMap::new();
        md.insert("authorization", "Bearer nope".parse().unwrap());
        let err = authenticate(&md, &maker).unwrap_err();
        assert_eq!(
            (err.code, err.reason),
            (Code::Unauthenticated, "token_invalid")
        );
    }

    #[test]
    fn idempotency_key_prefers_metadata_and_is_bounded() {
        let mut md = MetadataMap::new();
        assert_eq!(idempotency_key(&md, "").unwrap(), None);
        assert_eq!(
            idempotency_key(&md, "body-key").unwrap().as_deref(),
            Some("body-key")
        );
        md.insert(IDEMPOTENCY_KEY, "header-key".parse().unwrap());
        assert_eq!(
            idempotency_key(&md, "body-key").unwrap().as_deref(),
            Some("header-key")
        );
        md.insert(IDEMPOTENCY_KEY, "k".repeat(256).parse().unwrap());
        assert!(idempotency_key(&md, "").is_err());
    }
}
