//! What the PostgreSQL and Redis connections share about TLS: reading a CA bundle from config, and
//! telling apart the certificate failures an operator fixes in different settings.

use std::path::Path;

use rustls::pki_types::{CertificateDer, pem::PemObject};

/// The certificates in a PEM file (e.g. the RDS bundle); an error when it cannot be read or holds
/// none, so a wrong path stops start-up instead of the first connection.
pub fn read_ca_file(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            anyhow::anyhow!("{} is not a PEM certificate bundle: {e:?}", path.display())
        })?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{} holds no PEM certificate",
        path.display()
    );
    Ok(certs)
}

/// Why a server's certificate was refused, read from an error's text (the TLS error reaches us
/// wrapped in I/O and driver errors, as text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateProblem {
    /// Not signed by a configured CA: the CA setting is wrong.
    UnknownIssuer,
    /// Signed, but for another name: the host in the URL is wrong (or the server's certificate).
    WrongName,
    /// Expired, revoked, a bad signature...
    Other,
}

/// `Some` when `error_text` is rustls refusing the peer's certificate.
pub fn certificate_problem(error_text: &str) -> Option<CertificateProblem> {
    if !error_text.contains("invalid peer certificate") {
        return None;
    }
    Some(if error_text.contains("UnknownIssuer") {
        CertificateProblem::UnknownIssuer
    } else if error_text.contains("not valid for name") || error_text.contains("NotValidForName") {
        CertificateProblem::WrongName
    } else {
        CertificateProblem::Other
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_problems_are_told_apart() {
        assert_eq!(
            certificate_problem(
                "error communicating with database: invalid peer certificate: UnknownIssuer"
            ),
            Some(CertificateProblem::UnknownIssuer)
        );
        assert_eq!(
            certificate_problem(
                "invalid peer certificate: certificate not valid for name \"127.0.0.1\"; certificate is only valid for DnsName(\"localhost\")"
            ),
            Some(CertificateProblem::WrongName)
        );
        assert_eq!(certificate_problem("connection refused"), None);
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let err = read_ca_file(&path).unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
        let err = read_ca_file(&dir.path().join("missing.pem"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read"), "{err}");
    }
}
