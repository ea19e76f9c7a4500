//! The ports the mesh listens on, checked before anything starts. A port some other process holds
//! (most often a mesh started earlier) would answer the readiness probe in place of the service
//! that failed to bind it, and xtask would report that service ready.

use std::{fmt::Write as _, net::TcpListener};

use anyhow::bail;

/// One address a service listens on.
#[derive(Clone, Copy, Debug)]
pub struct Listener<'a> {
    pub service: &'a str,
    /// What the port serves, as the README's ports table names it.
    pub role: &'a str,
    /// The service's default (`server.grpc_addr`, `server.http_addr`, or the gateway's and the
    /// mailer's `http_addr`/`grpc_addr`); `cargo xtask up` does not change them.
    pub addr: &'a str,
}

/// Every address the six services of `cargo xtask up` listen on.
pub const MESH: [Listener<'static>; 12] = [
    listener("auth", "gRPC", "0.0.0.0:50051"),
    listener("auth", "side HTTP", "0.0.0.0:8081"),
    listener("accounts", "gRPC", "0.0.0.0:50052"),
    listener("accounts", "side HTTP", "0.0.0.0:8082"),
    listener("transfers", "gRPC", "0.0.0.0:50053"),
    listener("transfers", "side HTTP", "0.0.0.0:8083"),
    listener("mailer", "side HTTP", "0.0.0.0:8084"),
    listener("webhooks", "gRPC", "0.0.0.0:50054"),
    listener("webhooks", "side HTTP", "0.0.0.0:8086"),
    listener("edge-gateway", "public HTTP", "0.0.0.0:8080"),
    listener("edge-gateway", "public gRPC", "0.0.0.0:9090"),
    listener("edge-gateway", "admin HTTP", "0.0.0.0:8085"),
];

pub const fn listener<'a>(service: &'a str, role: &'a str, addr: &'a str) -> Listener<'a> {
    Listener {
        service,
        role,
        addr,
    }
}

/// Binds every address the way the services will (std, like tokio, sets `SO_REUSEADDR`, so a
/// connection of an earlier run in TIME_WAIT does not count as taken) and lets it go again. Fails
/// naming each port that cannot be bound and the service that needs it.
pub fn ensure_free(listeners: &[Listener<'_>]) -> anyhow::Result<()> {
    let mut taken = String::new();
    for l in listeners {
        if let Err(e) = TcpListener::bind(l.addr) {
            let port = l.addr.rsplit_once(':').map_or(l.addr, |(_, port)| port);
            let _ = writeln!(
                taken,
                "  port {port}: {} {} ({}): {e}",
                l.service, l.role, l.addr
            );
        }
    }
    if !taken.is_empty() {
        bail!(
            "cannot start the mesh, ports it needs are not free:\n{taken}\
             Another mesh or process is probably listening there; stop it first \
             (`ss -ltnp` shows which process holds a port)."
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_someone_else_holds_is_refused_naming_the_port_and_the_service() {
        let held = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let addr = format!("0.0.0.0:{port}");

        let err = ensure_free(&[listener("transfers", "side HTTP", &addr)])
            .unwrap_err()
            .to_string();

        assert!(err.contains(&format!("port {port}")), "{err}");
        assert!(err.contains("transfers side HTTP"), "{err}");
    }

    #[test]
    fn only_the_taken_ports_are_named() {
        let held = TcpListener::bind("0.0.0.0:0").unwrap();
        let held_port = held.local_addr().unwrap().port();
        let held_addr = format!("0.0.0.0:{held_port}");
        // a port that was free a moment ago (the OS hands out a new one for each :0 bind)
        let free_port = TcpListener::bind("0.0.0.0:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let free_addr = format!("0.0.0.0:{free_port}");

        let err = ensure_free(&[
            listener("auth", "gRPC", &free_addr),
            listener("edge-gateway", "public HTTP", &held_addr),
        ])
        .unwrap_err()
        .to_string();

        assert!(
            err.contains(&format!("port {held_port}: edge-gateway")),
            "{err}"
        );
        assert!(!err.contains(&format!("port {free_port}")), "{err}");
    }

    #[test]
    fn free_ports_pass() {
        let port = TcpListener::bind("0.0.0.0:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("0.0.0.0:{port}");
        ensure_free(&[listener("mailer", "side HTTP", &addr)]).unwrap();
    }

    #[test]
    fn every_readiness_probe_is_on_a_checked_port_of_its_service() {
        for (service, url) in crate::SERVICES {
            let port = url
                .trim_start_matches("http://")
                .split_once('/')
                .and_then(|(host, _)| host.rsplit_once(':'))
                .map(|(_, port)| port)
                .unwrap();
            assert!(
                MESH.iter()
                    .any(|l| l.service == service && l.addr.ends_with(&format!(":{port}"))),
                "{service}'s readiness port {port} is not in ports::MESH"
            );
        }
    }
}
