//! Random secrets from the OS-seeded CSPRNG, and the hash refresh tokens are stored as.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// 256 random bits, base64url without padding (43 characters): refresh tokens and
/// verification codes.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What is stored for a refresh token: SHA-256 of its text. A 256-bit random value needs no salt
/// or slow hash; a database leak does not reveal usable tokens.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Encrypts `plaintext` (XChaCha20-Poly1305, random nonce) under a key derived from `token`, so
/// only someone who presents `token` again can read it. The key is SHA-256 of a label and the
/// token: not the stored [`token_hash`], so what the database or Redis holds does not open it.
pub fn seal_for_token(
    token: &str,
    plaintext: &[u8],
) -> Result<Vec<u8>, orion::errors::UnknownCryptoError> {
    orion::aead::seal(&key_of(token)?, plaintext)
}

/// The plaintext of [`seal_for_token`]'s output, given the same token.
pub fn open_with_token(
    token: &str,
    sealed: &[u8],
) -> Result<Vec<u8>, orion::errors::UnknownCryptoError> {
    orion::aead::open(&key_of(token)?, sealed)
}

fn key_of(token: &str) -> Result<orion::aead::SecretKey, orion::errors::UnknownCryptoError> {
    let mut hasher = Sha256::new();
    hasher.update(b"transactions-auth renew-retry v1\0");
    hasher.update(token.as_bytes());
    let key: [u8; 32] = hasher.finalize().into();
    orion::aead::SecretKey::try_from(&key[..])
}

/// Constant-time comparison of two secrets.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_distinct_and_url_safe() {
        let (a, b) = (random_token(), random_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_eq!(token_hash(&a).len(), 32);
        assert!(secrets_equal(&a, &a.clone()));
        assert!(!secrets_equal(&a, &b));
    }

    #[test]
    fn what_is_sealed_for_a_token_opens_only_with_that_token() {
        let (a, b) = (random_token(), random_token());
        let sealed = seal_for_token(&a, b"the new pair").unwrap();
        assert_eq!(open_with_token(&a, &sealed).unwrap(), b"the new pair");
        assert!(open_with_token(&b, &sealed).is_err());
        assert_ne!(
            seal_for_token(&a, b"the new pair").unwrap(),
            sealed,
            "fresh nonce"
        );
    }
}
