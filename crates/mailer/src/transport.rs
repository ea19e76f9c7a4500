//! Where emails go: SMTP (STARTTLS, TLS or plain, with optional AUTH) in production, `.eml` files
//! in development. Both are lettre transports behind one `send`.

use std::time::Duration;

use anyhow::Context;
use lettre::{
    AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    transport::smtp::{PoolConfig, authentication::Credentials},
};

use crate::config::{SmtpTls, TransportConfig, TransportKind};

/// A send that did not go through; the consumer retries it.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("SMTP: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("writing the .eml file: {0}")]
    File(#[from] lettre::transport::file::Error),
    #[error("send timed out after {0} ms")]
    Timeout(u64),
}

#[derive(Clone)]
enum Inner {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    File(AsyncFileTransport<Tokio1Executor>),
}

/// The configured transport.
#[derive(Clone)]
pub struct Transport {
    inner: Inner,
    send_timeout: Duration,
}

impl Transport {
    /// Builds the transport; for `file`, creates the folder.
    pub fn from_config(cfg: &TransportConfig) -> anyhow::Result<Self> {
        let send_timeout = Duration::from_millis(cfg.send_timeout_ms);
        let inner = match cfg.kind {
            TransportKind::File => {
                std::fs::create_dir_all(&cfg.file_dir)
                    .with_context(|| format!("creating mail folder {}", cfg.file_dir.display()))?;
                Inner::File(AsyncFileTransport::new(&cfg.file_dir))
            }
            TransportKind::Smtp => Inner::Smtp(smtp(cfg, send_timeout)?),
        };
        Ok(Self {
            inner,
            send_timeout,
        })
    }

    /// Sends one message, bounded by `send_timeout_ms`.
    pub async fn send(&self, message: Message) -> Result<(), SendError> {
        let ms = self.send_timeout.as_millis() as u64;
        let sent = async {
            match &self.inner {
                Inner::Smtp(t) => t.send(message).await.map(|_| ()).map_err(SendError::from),
                Inner::File(t) => t.send(message).await.map(|_| ()).map_err(SendError::from),
            }
        };
        tokio::time::timeout(self.send_timeout, sent)
            .await
            .map_err(|_| SendError::Timeout(ms))?
    }
}

/// The SMTP transport: the configured security mode, port, timeout, pool and (optional) AUTH.
fn smtp(
    cfg: &TransportConfig,
    send_timeout: Duration,
) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    let builder = match cfg.tls {
        SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&cfg.host)?,
        SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&cfg.host)?,
        SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(cfg.host.as_str()),
    };
    let mut builder = builder
        .port(cfg.port)
        .timeout(Some(send_timeout))
        .pool_config(PoolConfig::new().max_size(cfg.pool_max_size));
    if let Some(user) = cfg.username.as_ref().filter(|u| !u.is_empty()) {
        let password = match &cfg.password_file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading SMTP password file {}", path.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            None => cfg.password.clone().unwrap_or_default(),
        };
        builder = builder.credentials(Credentials::new(user.clone(), password));
    }
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smtp(tls: SmtpTls, port: u16) -> TransportConfig {
        TransportConfig {
            kind: TransportKind::Smtp,
            host: "smtp.example.com".into(),
            port,
            tls,
            username: Some("mailer".into()),
            password: Some("secret".into()),
            ..TransportConfig::default()
        }
    }

    #[tokio::test]
    async fn every_smtp_security_mode_builds_with_credentials() {
        // building sets up rustls (no connection is made until the first send)
        for (tls, port) in [
            (SmtpTls::Starttls, 587),
            (SmtpTls::Tls, 465),
            (SmtpTls::None, 25),
        ] {
            Transport::from_config(&smtp(tls, port)).unwrap_or_else(|e| panic!("{tls:?}: {e:#}"));
        }
    }

    #[tokio::test]
    async fn a_password_file_is_read_and_a_missing_one_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("smtp-password");
        std::fs::write(&path, "from-file\n").unwrap();
        let mut cfg = smtp(SmtpTls::Starttls, 587);
        cfg.password_file = Some(path);
        Transport::from_config(&cfg).unwrap();
        cfg.password_file = Some(dir.path().join("missing"));
        let err = Transport::from_config(&cfg).err().unwrap();
        assert!(format!("{err:#}").contains("SMTP password file"), "{err:#}");
    }
}
