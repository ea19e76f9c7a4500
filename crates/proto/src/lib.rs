//! The public contract, generated from `proto/` at build time.
//!
//! `DESCRIPTOR_SET` is the encoded `FileDescriptorSet` of every file (with `google.api.http`
//! options and source comments), used by gRPC reflection and by the edge gateway to build its
//! HTTP routes and OpenAPI document.

/// A point in time as the contract carries it (`google.protobuf.Timestamp`).
pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// Encoded `google.protobuf.FileDescriptorSet` of the whole contract.
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

pub mod google {
    pub mod api {
        tonic::include_proto!("google.api");
    }
}

pub mod auth {
    pub mod v1 {
        tonic::include_proto!("transactions.auth.v1");
    }
}

pub mod accounts {
    pub mod v1 {
        tonic::include_proto!("transactions.accounts.v1");
    }
}

pub mod transfers {
    pub mod v1 {
        tonic::include_proto!("transactions.transfers.v1");
    }
}

pub mod webhooks {
    pub mod v1 {
        tonic::include_proto!("transactions.webhooks.v1");
    }
}

/// Fully qualified gRPC service names, as routed by the gateway and listed by reflection.
pub mod service_names {
    pub const AUTH: &str = "transactions.auth.v1.AuthService";
    pub const ACCOUNTS: &str = "transactions.accounts.v1.AccountsService";
    pub const TRANSFERS: &str = "transactions.transfers.v1.TransfersService";
    pub const WEBHOOKS: &str = "transactions.webhooks.v1.WebhooksService";
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn descriptor_set_holds_every_service_with_http_rules() {
        let set = prost_types::FileDescriptorSet::decode(DESCRIPTOR_SET).unwrap();
        let services: Vec<String> = set
            .file
            .iter()
            .flat_map(|f| {
                f.service
                    .iter()
                    .map(move |s| format!("{}.{}", f.package(), s.name()))
            })
            .collect();
        for name in [
            service_names::AUTH,
            service_names::ACCOUNTS,
            service_names::TRANSFERS,
            service_names::WEBHOOKS,
        ] {
            assert!(services.iter().any(|s| s == name), "{name} missing");
        }
        // every method carries an option (the google.api.http rule) and a doc comment
        for f in set
            .file
            .iter()
            .filter(|f| f.package().starts_with("transactions."))
        {
            for s in &f.service {
                for m in &s.method {
                    assert!(m.options.is_some(), "{} has no http rule", m.name());
                }
            }
            assert!(
                f.source_code_info.is_some(),
                "{} lost its comments",
                f.name()
            );
        }
    }
}
