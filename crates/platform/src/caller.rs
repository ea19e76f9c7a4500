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
/// Metadata with which the gateway vouches for [`CLIENT_IP`] and [`CLIENT_USER_AGENT`]
/// (`server.gateway_secret`); the gRPC server removes those facts from any call without it
/// ([`GatewayFactsLayer`]), and removes the secret itself before a handler sees the call.
pub const GATEWAY_SECRET: &str = "x-gateway-secret";

/// Keeps the client facts of a request only when it carries the configured gateway secret
/// (compared in constant time); otherwise `x-client-ip` and `x-client-user-agent` are removed, so
/// [`client_ip`] falls back to the connection's peer address. With no secret configured every
/// call is treated as not from the gateway. Applied once, where the gRPC server is built.
#[derive(Clone)]
pub struct GatewayFactsLayer {
    secret: Option<Arc<str>>,
}

impl GatewayFactsLayer {
    pub fn new(secret: Option<&crate::config::GatewaySecret>) -> Self {
        Self {
            secret: secret
                .map(|s| s.0.trim())
                .filter(|s| !s.is_empty())
                .map(Arc::from),
        }
    }

    /// Whether `headers` carry the gateway's secret; removes it either way.
    pub fn vouched(&self, headers: &mut http::HeaderMap) -> bool {
        let presented = headers.remove(GATEWAY_SECRET);
        let vouched = match (&self.secret, presented) {
            (Some(secret), Some(presented)) => presented
                .to_str()
                .is_ok_and(|p| secrets_equal(p.trim(), secret)),
            _ => false,
        };
        if !vouched {
            headers.remove(CLIENT_IP);
            headers.remove(CLIENT_USER_AGENT);
        }
        vouched
    }
}

/// Constant-time comparison (of SHA-256 digests, so lengths do not show).
fn secrets_equal(a: &str, b: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

impl<S> tower::Layer<S> for GatewayFactsLayer {
    type Service = GatewayFacts<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GatewayFacts {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GatewayFacts<S> {
    inner: S,
    layer: GatewayFactsLayer,
}

impl<S, B> tower::Service<http::Request<B>> for GatewayFacts<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        self.layer.vouched(req.headers_mut());
        self.inner.call(req)
    }
}
pub const REQUEST_ID: &str = "x-request-id";
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The username in the token (display, logs); never the key of what the caller owns.
    pub username: String,
    /// The user's stable id (claim `uid`): ownership is keyed by it, as a username can be taken
    /// again by a new user once its user is deleted.
    pub user_id: Uuid,
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
        user_id: claims.uid,
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

/// The client IP: what the gateway saw (kept only when it vouched for it: [`GatewayFactsLayer`]),
/// else the peer address of the gRPC connection.
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
        None => {
            // the request field can carry what a header cannot (NUL, which PostgreSQL refuses)
            crate::text::reject_control_chars("request_id", fallback)?;
            Some(fallback.trim().to_owned())
        }
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
        let uid = Uuid::new_v4();
        let token = maker
            .sign(&Claims::access(
                "bob",
                uid,
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
        assert_eq!(caller.user_id, uid);
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
    fn client_facts_are_kept_only_with_the_gateways_secret() {
        let secret = crate::config::GatewaySecret("s3cret".into());
        let facts = |layer: &GatewayFactsLayer, presented: Option<&str>| {
            let mut h = http::HeaderMap::new();
            h.insert(CLIENT_IP, "6.6.6.6".parse().unwrap());
            h.insert(CLIENT_USER_AGENT, "forged".parse().unwrap());
            if let Some(p) = presented {
                h.insert(GATEWAY_SECRET, p.parse().unwrap());
            }
            let vouched = layer.vouched(&mut h);
            assert!(
                h.get(GATEWAY_SECRET).is_none(),
                "the secret never reaches a handler"
            );
            (
                vouched,
                h.get(CLIENT_IP).is_some(),
                h.get(CLIENT_USER_AGENT).is_some(),
            )
        };
        let configured = GatewayFactsLayer::new(Some(&secret));
        assert_eq!(facts(&configured, Some("s3cret")), (true, true, true));
        assert_eq!(facts(&configured, Some("guess")), (false, false, false));
        assert_eq!(facts(&configured, None), (false, false, false));
        let unset = GatewayFactsLayer::new(None);
        assert_eq!(facts(&unset, Some("s3cret")), (false, false, false));
        assert_eq!(format!("{secret:?}"), "GatewaySecret(***)");
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
