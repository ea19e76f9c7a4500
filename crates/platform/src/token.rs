//! Access tokens: PASETO v4.public (default) or JWT/EdDSA, both Ed25519, behind one trait.
//!
//! `auth` signs with the private key; every other service verifies with the public key alone.
//! Only tokens whose `typ` is `access` are accepted, so a token minted for anything else (e.g. a
//! refresh token in a token format) is never taken as an access token.

use std::{path::Path, sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use chrono::{DateTime, SubsecRound, Utc};
use pasetors::{
    Public,
    keys::{AsymmetricPublicKey, AsymmetricSecretKey},
    token::UntrustedToken,
    version4::{PublicToken, V4},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::{TokenConfig, TokenKind};

/// The only token type accepted by [`TokenMaker::verify`].
pub const ACCESS: &str = "access";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Depositor,
    Banker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Depositor => "depositor",
            Role::Banker => "banker",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "depositor" => Some(Role::Depositor),
            "banker" => Some(Role::Banker),
            _ => None,
        }
    }
}

/// `auth.users.role` decoded as an enum (`#[sqlx(try_from = "String")]`): a value the CHECK
/// constraint would not allow is an error, never silently a depositor.
impl TryFrom<String> for Role {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Role::parse(&value).ok_or_else(|| format!("unknown role `{value}`"))
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Username.
    pub sub: String,
    /// The user's stable id (`auth.users.id`): what the services key ownership by. A token
    /// without it does not parse, so it is refused as invalid.
    pub uid: Uuid,
    pub role: Role,
    /// Session id.
    pub sid: Uuid,
    /// Token type; must be `access`.
    pub typ: String,
    /// Whether the email was verified when the token was issued.
    pub email_verified: bool,
    pub iat: DateTime<Utc>,
    pub exp: DateTime<Utc>,
    pub jti: Uuid,
}

impl Claims {
    /// Claims of a fresh access token.
    pub fn access(
        sub: &str,
        uid: Uuid,
        role: Role,
        sid: Uuid,
        email_verified: bool,
        ttl: Duration,
    ) -> Self {
        let iat = Utc::now().trunc_subsecs(0);
        Self {
            sub: sub.to_owned(),
            uid,
            role,
            sid,
            typ: ACCESS.into(),
            email_verified,
            iat,
            exp: iat + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::minutes(15)),
            jti: Uuid::new_v4(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed or its signature is invalid")]
    Invalid,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not an access token")]
    WrongType,
    /// Its session was revoked (see [`crate::revocations`]).
    #[error("the token's session has been revoked")]
    Revoked,
    #[error("this service has no private key and cannot issue tokens")]
    CannotSign,
    #[error("token key problem: {0}")]
    Key(String),
}

/// Issues and verifies access tokens.
pub trait TokenMaker: Send + Sync + 'static {
    /// Signs `claims` (any `typ`; callers issue `access`).
    fn sign(&self, claims: &Claims) -> Result<String, TokenError>;
    /// Verifies signature, expiry and type.
    fn verify(&self, token: &str) -> Result<Claims, TokenError>;
}

/// An Ed25519 key pair; `secret` is absent in verifying-only services.
#[derive(Clone)]
pub struct Keys {
    seed: Option<[u8; 32]>,
    public: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("public", &B64.encode(self.public))
            .field("has_private", &self.seed.is_some())
            .finish()
    }
}

impl Keys {
    pub fn generate() -> Self {
        let kp = ed25519_compact::KeyPair::generate();
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&kp.sk.seed()[..]);
        Self::from_seed(seed)
    }

    pub fn from_seed(seed: [u8; 32]) -> Self {
        let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed));
        let mut public = [0u8; 32];
        public.copy_from_slice(&kp.pk[..]);
        Self {
            seed: Some(seed),
            public,
        }
    }

    pub fn public_only(public: [u8; 32]) -> Self {
        Self { seed: None, public }
    }

    pub fn private_b64(&self) -> Option<String> {
        self.seed.map(|s| B64.encode(s))
    }

    pub fn public_b64(&self) -> String {
        B64.encode(self.public)
    }

    /// Keys from config: the private key when given (public derived), else the public key.
    pub fn from_config(cfg: &TokenConfig) -> Result<Self, TokenError> {
        if let Some(seed) = read_key(&cfg.private_key, &cfg.private_key_file)? {
            return Ok(Self::from_seed(seed));
        }
        match read_key(&cfg.public_key, &cfg.public_key_file)? {
            Some(public) => Ok(Self::public_only(public)),
            None => Err(TokenError::Key(
                "no token key configured: set token.public_key or token.public_key_file".into(),
            )),
        }
    }

    /// Development default: a key pair kept under `dir` (created on first run, never committed).
    pub fn load_or_create_dev(dir: &Path) -> Result<Self, TokenError> {
        let private = dir.join("token_ed25519.key");
        let public = dir.join("token_ed25519.pub");
        if private.exists() {
            let text =
                std::fs::read_to_string(&private).map_err(|e| TokenError::Key(e.to_string()))?;
            return Ok(Self::from_seed(decode32(text.trim())?));
        }
        std::fs::create_dir_all(dir).map_err(|e| TokenError::Key(e.to_string()))?;
        let keys = Self::generate();
        write_private(&private, &keys.private_b64().unwrap_or_default())?;
        std::fs::write(&public, keys.public_b64()).map_err(|e| TokenError::Key(e.to_string()))?;
        Ok(keys)
    }

    /// A token maker of the configured kind.
    /// The maker of `kind`; its `verify` remembers tokens it has verified (see [`Verified`]).
    pub fn maker(&self, kind: TokenKind) -> Arc<dyn TokenMaker> {
        match kind {
            TokenKind::Paseto => Arc::new(Verified::new(PasetoMaker::new(self))),
            TokenKind::Jwt => Arc::new(Verified::new(JwtMaker::new(self))),
        }
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), TokenError> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| TokenError::Key(e.to_string()))?;
        f.write_all(text.as_bytes())
            .map_err(|e| TokenError::Key(e.to_string()))
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, text).map_err(|e| TokenError::Key(e.to_string()))
    }
}

fn read_key(
    inline: &Option<String>,
    file: &Option<std::path::PathBuf>,
) -> Result<Option<[u8; 32]>, TokenError> {
    if let Some(k) = inline.as_deref().filter(|k| !k.trim().is_empty()) {
        return decode32(k.trim()).map(Some);
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TokenError::Key(format!("{}: {e}", path.display())))?;
        return decode32(text.trim()).map(Some);
    }
    Ok(None)
}

fn decode32(b64: &str) -> Result<[u8; 32], TokenError> {
    let bytes = B64
        .decode(b64)
        .map_err(|e| TokenError::Key(format!("key is not base64: {e}")))?;
    bytes
        .try_into()
        .map_err(|_| TokenError::Key("key must be 32 bytes".into()))
}

/// A maker whose `verify` remembers the claims of tokens whose signature it has checked, so a
/// client that sends the same access token with every call (all of them) costs one Ed25519
/// verification per token, not per call. The key is the whole token text: the same bytes under
/// the same public key verify the same way, so only expiry and type are checked again on a hit.
/// Failed tokens are not remembered. Bounded by [`VERIFIED_TOKENS_REMEMBERED`]. Revocation is
/// checked outside this cache ([`crate::revocations::Guarded`] wraps it), never skipped by a hit.
pub struct Verified<M> {
    inner: M,
    seen: quick_cache::sync::Cache<String, Claims>,
}

/// Tokens [`Verified`] remembers at most (a token is ~300 bytes: a few MB at most).
pub const VERIFIED_TOKENS_REMEMBERED: usize = 10_000;

impl<M: TokenMaker> Verified<M> {
    pub fn new(inner: M) -> Self {
        Self {
            inner,
            seen: quick_cache::sync::Cache::new(VERIFIED_TOKENS_REMEMBERED),
        }
    }
}

impl<M: TokenMaker> TokenMaker for Verified<M> {
    fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        self.inner.sign(claims)
    }

    fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if let Some(claims) = self.seen.get(token) {
            return check(claims);
        }
        let claims = self.inner.verify(token)?;
        self.seen.insert(token.to_owned(), claims.clone());
        Ok(claims)
    }
}

fn check(claims: Claims) -> Result<Claims, TokenError> {
    if claims.exp <= Utc::now() {
        return Err(TokenError::Expired);
    }
    if claims.typ != ACCESS {
        return Err(TokenError::WrongType);
    }
    Ok(claims)
}

/// PASETO v4.public.
pub struct PasetoMaker {
    secret: Option<AsymmetricSecretKey<V4>>,
    public: AsymmetricPublicKey<V4>,
}

impl PasetoMaker {
    pub fn new(keys: &Keys) -> Self {
        let secret = keys.seed.map(|seed| {
            let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed));
            AsymmetricSecretKey::<V4>::from(&kp.sk[..]).expect("64-byte ed25519 secret key")
        });
        let public =
            AsymmetricPublicKey::<V4>::from(&keys.public).expect("32-byte ed25519 public key");
        Self { secret, public }
    }
}

impl TokenMaker for PasetoMaker {
    fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let sk = self.secret.as_ref().ok_or(TokenError::CannotSign)?;
        let payload = serde_json::to_vec(claims).map_err(|e| TokenError::Key(e.to_string()))?;
        PublicToken::sign(sk, &payload, None, None).map_err(|e| TokenError::Key(e.to_string()))
    }

    fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let untrusted =
            UntrustedToken::<Public, V4>::try_from(token).map_err(|_| TokenError::Invalid)?;
        let trusted = PublicToken::verify(&self.public, &untrusted, None, None)
            .map_err(|_| TokenError::Invalid)?;
        let claims: Claims =
            serde_json::from_str(trusted.payload()).map_err(|_| TokenError::Invalid)?;
        check(claims)
    }
}

/// JWT signed with EdDSA, same claims (times as seconds since the epoch, as JWT requires).
pub struct JwtMaker {
    encoding: Option<jsonwebtoken::EncodingKey>,
    decoding: jsonwebtoken::DecodingKey,
}

#[derive(Serialize, Deserialize)]
struct JwtClaims {
    sub: String,
    uid: Uuid,
    role: Role,
    sid: Uuid,
    typ: String,
    email_verified: bool,
    iat: i64,
    exp: i64,
    jti: Uuid,
}

/// PKCS#8 prefix of an Ed25519 private key (RFC 8410): the 32-byte seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

impl JwtMaker {
    pub fn new(keys: &Keys) -> Self {
        let encoding = keys.seed.map(|seed| {
            let mut der = PKCS8_ED25519_PREFIX.to_vec();
            der.extend_from_slice(&seed);
            jsonwebtoken::EncodingKey::from_ed_der(&der)
        });
        Self {
            encoding,
            decoding: jsonwebtoken::DecodingKey::from_ed_der(&keys.public),
        }
    }
}

impl TokenMaker for JwtMaker {
    fn sign(&self, c: &Claims) -> Result<String, TokenError> {
        let key = self.encoding.as_ref().ok_or(TokenError::CannotSign)?;
        let jc = JwtClaims {
            sub: c.sub.clone(),
            uid: c.uid,
            role: c.role,
            sid: c.sid,
            typ: c.typ.clone(),
            email_verified: c.email_verified,
            iat: c.iat.timestamp(),
            exp: c.exp.timestamp(),
            jti: c.jti,
        };
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
            &jc,
            key,
        )
        .map_err(|e| TokenError::Key(e.to_string()))
    }

    fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        validation.leeway = 0;
        validation.validate_exp = false; // checked below, the same way as for PASETO
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<JwtClaims>(token, &self.decoding, &validation)
            .map_err(|_| TokenError::Invalid)?;
        let jc = data.claims;
        let ts = |s: i64| DateTime::<Utc>::from_timestamp(s, 0).ok_or(TokenError::Invalid);
        check(Claims {
            sub: jc.sub,
            uid: jc.uid,
            role: jc.role,
            sid: jc.sid,
            typ: jc.typ,
            email_verified: jc.email_verified,
            iat: ts(jc.iat)?,
            exp: ts(jc.exp)?,
            jti: jc.jti,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn makers(keys: &Keys) -> Vec<(&'static str, Arc<dyn TokenMaker>)> {
        vec![
            ("paseto", keys.maker(TokenKind::Paseto)),
            ("jwt", keys.maker(TokenKind::Jwt)),
        ]
    }

    fn claims() -> Claims {
        Claims::access(
            "alice",
            Uuid::new_v4(),
            Role::Depositor,
            Uuid::new_v4(),
            true,
            Duration::from_secs(60),
        )
    }

    #[test]
    fn a_remembered_token_is_still_checked_for_expiry() {
        let keys = Keys::generate();
        let mut remembered = Vec::new();
        for (name, m) in makers(&keys) {
            // expiry is kept in whole seconds: 2 s from now is at least 1 s away
            let short = Claims::access(
                "alice",
                Uuid::new_v4(),
                Role::Depositor,
                Uuid::new_v4(),
                true,
                Duration::from_secs(2),
            );
            let token = m.sign(&short).unwrap();
            assert_eq!(m.verify(&token).unwrap(), short, "{name}: first, verified");
            assert_eq!(
                m.verify(&token).unwrap(),
                short,
                "{name}: again, remembered"
            );
            // the same token with one signature character changed is another text: checked anew
            let mut tampered = token.clone().into_bytes();
            let last = tampered.len() - 2;
            tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(tampered).unwrap();
            assert!(m.verify(&tampered).is_err(), "{name}: tampered");
            remembered.push((name, m, token));
        }
        std::thread::sleep(Duration::from_millis(3_100));
        for (name, m, token) in remembered {
            assert_eq!(m.verify(&token), Err(TokenError::Expired), "{name}");
        }
    }

    /// `cargo test --release -p platform token::tests::verify_cost -- --ignored --nocapture`
    #[test]
    #[ignore = "a manual measurement; run in release"]
    fn verify_cost() {
        let keys = Keys::generate();
        let token = keys.maker(TokenKind::Paseto).sign(&claims()).unwrap();
        let plain = PasetoMaker::new(&keys);
        let remembered = keys.maker(TokenKind::Paseto);
        for (name, m) in [
            ("signature every call", &plain as &dyn TokenMaker),
            ("remembered", remembered.as_ref()),
        ] {
            let n = 5_000;
            let started = std::time::Instant::now();
            for _ in 0..n {
                m.verify(&token).unwrap();
            }
            println!(
                "{name}: {:.1} µs per verify",
                started.elapsed().as_secs_f64() * 1e6 / n as f64
            );
        }
    }

    #[test]
    fn a_good_token_is_accepted_with_its_claims() {
        let keys = Keys::generate();
        for (name, m) in makers(&keys) {
            let c = claims();
            let token = m.sign(&c).unwrap();
            if name == "paseto" {
                assert!(token.starts_with("v4.public."));
            }
            assert_eq!(m.verify(&token).unwrap(), c, "{name}");
        }
    }

    #[test]
    fn a_verifier_with_only_the_public_key_accepts_and_cannot_sign() {
        let keys = Keys::generate();
        let public_only = Keys::public_only(keys.public);
        for kind in [TokenKind::Paseto, TokenKind::Jwt] {
            let token = keys.maker(kind).sign(&claims()).unwrap();
            let verifier = public_only.maker(kind);
            assert!(verifier.verify(&token).is_ok());
            assert_eq!(verifier.sign(&claims()), Err(TokenError::CannotSign));
        }
    }

    #[test]
    fn an_expired_token_is_rejected() {
        let keys = Keys::generate();
        for (name, m) in makers(&keys) {
            let mut c = claims();
            c.iat = Utc::now().trunc_subsecs(0) - chrono::Duration::minutes(20);
            c.exp = c.iat + chrono::Duration::minutes(15);
            let token = m.sign(&c).unwrap();
            assert_eq!(m.verify(&token), Err(TokenError::Expired), "{name}");
        }
    }

    #[test]
    fn a_tampered_token_is_rejected() {
        let keys = Keys::generate();
        for (name, m) in makers(&keys) {
            let token = m.sign(&claims()).unwrap();
            // flip one character in the middle of the payload/signature
            let mut bytes = token.into_bytes();
            let i = bytes.len() / 2;
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            assert_eq!(m.verify(&tampered), Err(TokenError::Invalid), "{name}");
        }
    }

    #[test]
    fn a_token_signed_with_another_key_is_rejected() {
        let ours = Keys::generate();
        let theirs = Keys::generate();
        for kind in [TokenKind::Paseto, TokenKind::Jwt] {
            let token = theirs.maker(kind).sign(&claims()).unwrap();
            assert_eq!(ours.maker(kind).verify(&token), Err(TokenError::Invalid));
        }
    }

    #[test]
    fn a_refresh_typed_token_is_not_an_access_token() {
        let keys = Keys::generate();
        for (name, m) in makers(&keys) {
            let mut c = claims();
            c.typ = "refresh".into();
            let token = m.sign(&c).unwrap();
            assert_eq!(m.verify(&token), Err(TokenError::WrongType), "{name}");
        }
    }

    #[test]
    fn a_token_without_a_user_id_is_refused() {
        // what auth signed before tokens carried `uid`: the same claims less that one
        #[derive(Serialize)]
        struct Old<'a> {
            sub: &'a str,
            role: Role,
            sid: Uuid,
            typ: &'a str,
            email_verified: bool,
            iat: serde_json::Value,
            exp: serde_json::Value,
            jti: Uuid,
        }
        let keys = Keys::generate();
        let c = claims();
        let old = |paseto: bool| Old {
            sub: &c.sub,
            role: c.role,
            sid: c.sid,
            typ: &c.typ,
            email_verified: c.email_verified,
            iat: if paseto {
                serde_json::to_value(c.iat).unwrap()
            } else {
                c.iat.timestamp().into()
            },
            exp: if paseto {
                serde_json::to_value(c.exp).unwrap()
            } else {
                c.exp.timestamp().into()
            },
            jti: c.jti,
        };
        let paseto = PasetoMaker::new(&keys);
        let sk = paseto.secret.as_ref().unwrap();
        let payload = serde_json::to_vec(&old(true)).unwrap();
        let token = PublicToken::sign(sk, &payload, None, None).unwrap();
        assert_eq!(paseto.verify(&token), Err(TokenError::Invalid), "paseto");
        let jwt = JwtMaker::new(&keys);
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
            &old(false),
            jwt.encoding.as_ref().unwrap(),
        )
        .unwrap();
        assert_eq!(jwt.verify(&token), Err(TokenError::Invalid), "jwt");
        // and the same claims with it are accepted by both
        for (name, m) in makers(&keys) {
            assert_eq!(m.verify(&m.sign(&c).unwrap()).unwrap().uid, c.uid, "{name}");
        }
    }

    #[test]
    fn garbage_is_rejected_not_panicked_on() {
        let keys = Keys::generate();
        for (_, m) in makers(&keys) {
            for junk in ["", "v4.public.", "a.b.c", "v4.public.!!!!", "Bearer x"] {
                assert_eq!(m.verify(junk), Err(TokenError::Invalid));
            }
        }
    }

    #[test]
    fn dev_keys_are_created_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = Keys::load_or_create_dev(dir.path()).unwrap();
        let b = Keys::load_or_create_dev(dir.path()).unwrap();
        assert_eq!(a.public_b64(), b.public_b64());
        let cfg = TokenConfig {
            public_key_file: Some(dir.path().join("token_ed25519.pub")),
            ..TokenConfig::default()
        };
        let verifier = Keys::from_config(&cfg).unwrap();
        let token = a.maker(TokenKind::Paseto).sign(&claims()).unwrap();
        assert!(verifier.maker(TokenKind::Paseto).verify(&token).is_ok());
    }
}
