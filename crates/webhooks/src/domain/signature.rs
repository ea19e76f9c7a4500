//! The signature of a delivery, in the style of Stripe's `Stripe-Signature`:
//!
//! ```text
//! Webhook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
//! ```
//!
//! The key is the endpoint's whole secret string (`whsec_...`, as shown at registration) as
//! bytes; the message is the timestamp in decimal, a `.`, and the exact body bytes. A receiver
//! recomputes the HMAC over the body it received, compares it in constant time with each `v1`,
//! and refuses a timestamp further than its tolerance from its clock (replays); [`verify`] is
//! that check, and docs/events.md shows it in a few lines of another language.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header's name.
pub const HEADER: &str = "Webhook-Signature";
/// The default tolerance of [`verify`]: a signature older (or newer) than this is refused.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

type HmacSha256 = Hmac<Sha256>;

/// A new endpoint secret: `whsec_` and 32 random bytes in hex.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("whsec_{}", hex::encode(bytes))
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header value for `body` signed at `timestamp` (unix seconds).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(tag))
}

/// Why a signature is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("the header has no t= or no v1=")]
    Malformed,
    #[error("the timestamp is outside the tolerance")]
    Stale,
    #[error("no v1 signature matches the body")]
    Mismatch,
}

/// The receiver's check: `header` signs `body` under `secret`, within `tolerance_secs` of `now`.
pub fn verify(
    secret: &str,
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), Invalid> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => signatures.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(Invalid::Malformed)?;
    if signatures.is_empty() {
        return Err(Invalid::Malformed);
    }
    if (now - timestamp).abs() > tolerance_secs {
        return Err(Invalid::Stale);
    }
    // verify_slice compares in constant time
    if signatures
        .iter()
        .any(|s| mac(secret, timestamp, body).verify_slice(s).is_ok())
    {
        Ok(())
    } else {
        Err(Invalid::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_a_tampered_body_an_old_timestamp_or_another_secret_do_not() {
        let secret = new_secret();
        assert!(secret.starts_with("whsec_") && secret.len() == 6 + 64);
        let body = br#"{"id":"e1","type":"transfer.posted"}"#;
        let header = sign(&secret, 1_700_000_000, body);
        assert!(header.starts_with("t=1700000000,v1="), "{header}");
        assert_eq!(verify(&secret, &header, body, 1_700_000_010, 300), Ok(()));
        assert_eq!(
            verify(
                &secret,
                &header,
                br#"{"id":"e1","type":"transfer.posteD"}"#,
                1_700_000_010,
                300
            ),
            Err(Invalid::Mismatch)
        );
        assert_eq!(
            verify(&secret, &header, body, 1_700_000_000 + 301, 300),
            Err(Invalid::Stale)
        );
        assert_eq!(
            verify(&new_secret(), &header, body, 1_700_000_010, 300),
            Err(Invalid::Mismatch)
        );
        assert_eq!(
            verify(&secret, "v1=00", body, 0, 300),
            Err(Invalid::Malformed)
        );
    }

    #[test]
    fn the_tag_is_hmac_sha256_of_timestamp_dot_body_as_any_other_implementation_computes_it() {
        // computed with Python's hmac module: hmac.new(b"whsec_test", b'1700000000.{"id":"e1"}',
        // hashlib.sha256).hexdigest()
        assert_eq!(
            sign("whsec_test", 1_700_000_000, br#"{"id":"e1"}"#),
            "t=1700000000,v1=6a85cb117c993612a34c72b4cfb5a16baed25a80d26e298ce0e6671320fd07c8"
        );
    }
}
