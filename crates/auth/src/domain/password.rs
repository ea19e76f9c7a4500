//! argon2id password hashing. Hashing is CPU-bound (tens of ms) and takes `argon2_memory_kib` of
//! memory, so it runs on the blocking pool, at most `max_concurrent_hashes` at once.

use std::sync::{Arc, OnceLock};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};

use super::{error::AuthError, secrets, types::Password};
use crate::config::PasswordConfig;

#[derive(Clone)]
pub struct Hasher {
    argon: Arc<Argon2<'static>>,
    /// A hash of a random password with the same cost: verifying against it when the user does not
    /// exist makes "unknown user" take as long as "wrong password".
    /// Computed on first use.
    dummy: Arc<OnceLock<String>>,
    /// Bounds the hashes running at once (and so their memory).
    permits: Arc<Semaphore>,
}

impl Hasher {
    pub fn new(cfg: &PasswordConfig) -> Result<Self, AuthError> {
        let params = Params::new(
            cfg.argon2_memory_kib,
            cfg.argon2_iterations,
            cfg.argon2_parallelism,
            None,
        )
        .map_err(|e| AuthError::Internal(format!("argon2 params: {e}")))?;
        if cfg.max_concurrent_hashes == 0 {
            return Err(AuthError::Internal(
                "password.max_concurrent_hashes must be at least 1".into(),
            ));
        }
        let argon = Arc::new(Argon2::new(Algorithm::Argon2id, Version::V0x13, params));
        return_hash_memory_to_the_os();
        Ok(Self {
            argon,
            dummy: Arc::new(OnceLock::new()),
            permits: Arc::new(Semaphore::new(cfg.max_concurrent_hashes)),
        })
    }

    /// Waits for a turn to hash. The permit moves into the blocking task, so a caller that goes
    /// away does not free the slot before the hash it started has finished.
    async fn turn(&self) -> Result<OwnedSemaphorePermit, AuthError> {
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))
    }

    /// OWASP parameters (m=19456 KiB, t=2, p=1).
    pub fn owasp() -> Result<Self, AuthError> {
        Self::new(&PasswordConfig::default())
    }

    pub async fn hash(&self, password: &Password) -> Result<String, AuthError> {
        let argon = self.argon.clone();
        let pw = password.expose().to_owned();
        let permit = self.turn().await?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            hash_with(&argon, &pw)
        })
        .await
        .map_err(|e| AuthError::Internal(e.to_string()))?
    }

    /// True when `password` matches `stored`; with `stored = None` it checks against the dummy
    /// hash (and returns false) so the time taken does not reveal whether the user exists.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> bool {
        let this = self.clone();
        let pw = password.to_owned();
        let exists = stored.is_some();
        let stored = stored.map(str::to_owned);
        let Ok(permit) = self.turn().await else {
            return false;
        };
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let hash = stored.unwrap_or_else(|| this.dummy_hash());
            PasswordHash::new(&hash)
                .map(|h| this.argon.verify_password(pw.as_bytes(), &h).is_ok())
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        ok && exists
    }
}

impl Hasher {
    /// Computes the dummy hash now (on the blocking pool), so the first login of an unknown user
    /// is not slower than the others.
    pub fn warm_up(&self) {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.dummy_hash());
    }

    fn dummy_hash(&self) -> String {
        self.dummy
            .get_or_init(|| hash_with(&self.argon, &secrets::random_token()).unwrap_or_default())
            .clone()
    }
}

/// Makes glibc's malloc give every allocation of 1 MiB or more its own mapping, returned to the
/// OS when freed. Without it, glibc raises its mmap threshold after the first 19 MiB argon2 block
/// is freed and from then on serves those blocks from per-thread heaps that keep and fragment
/// them: measured here, 320 verifications by 32 callers (4 at a time) left auth at 780 MB
/// resident; with it, 80 MB (4 × 19 MiB and the rest). Process-wide and idempotent; only large
/// allocations are affected, and auth makes few besides these.
fn return_hash_memory_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: mallopt only changes a tunable of glibc's allocator; it is thread-safe and
            // takes plain integers.
            let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024) };
            if ok != 1 {
                tracing::warn!("mallopt(M_MMAP_THRESHOLD) failed; argon2 memory may be retained");
            }
        });
    }
}

fn hash_with(argon: &Argon2<'static>, password: &str) -> Result<String, AuthError> {
    let h: PasswordHash = argon
        .hash_password(password.as_bytes())
        .map_err(|e| AuthError::Internal(format!("argon2: {e}")))?;
    Ok(h.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
        let h = Hasher::owasp().unwrap();
        let pw = Password::parse("correct horse").unwrap();
        let stored = h.hash(&pw).await.unwrap();
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        assert!(h.verify("correct horse", Some(&stored)).await);
        assert!(!h.verify("wrong horse", Some(&stored)).await);
        assert!(!h.verify("correct horse", None).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_than_the_configured_hashes_run_at_once() {
        let cfg = PasswordConfig {
            argon2_memory_kib: 1024,
            argon2_iterations: 1,
            max_concurrent_hashes: 2,
            ..PasswordConfig::default()
        };
        let h = Hasher::new(&cfg).unwrap();
        let pw = Password::parse("correct horse").unwrap();
        let hold = [h.turn().await.unwrap(), h.turn().await.unwrap()];
        let waiting = {
            let h = h.clone();
            let pw = pw.clone();
            tokio::spawn(async move { h.hash(&pw).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "a third hash waits while two run");
        drop(hold);
        let stored = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("it runs once a slot frees")
            .unwrap()
            .unwrap();
        assert!(h.verify("correct horse", Some(&stored)).await);
        assert!(
            Hasher::new(&PasswordConfig {
                max_concurrent_hashes: 0,
                ..PasswordConfig::default()
            })
            .is_err()
        );
    }
}
