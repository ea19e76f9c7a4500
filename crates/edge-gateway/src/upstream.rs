//! The upstream services: one lazily connected tonic channel per proto package, and a unary call on
//! already-encoded protobuf bytes (the gateway never needs the generated client types).

use std::{collections::HashMap, str::FromStr, time::Duration};

use bytes::{Buf, BufMut, Bytes};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::MetadataMap,
    transport::{Channel, Endpoint},
};

use crate::config::{Config, upstream_key};

/// Channels by proto package, and the secret with which this gateway vouches for the client
/// facts it sends upstream (`server.gateway_secret`; see `platform::caller::GatewayFactsLayer`).
#[derive(Clone, Debug)]
pub struct Upstreams {
    by_package: HashMap<String, (String, Channel)>,
    gateway_secret: Option<http::HeaderValue>,
}

impl Upstreams {
    /// A channel for each package in `packages`; fails when one has no upstream configured.
    pub fn new(cfg: &Config, packages: &[String]) -> anyhow::Result<Self> {
        let mut by_package = HashMap::new();
        for package in packages {
            let key = upstream_key(package);
            let url = cfg.upstreams.get(key).ok_or_else(|| {
                anyhow::anyhow!(
                    "no upstream for package {package}: set upstreams.{key} (EDGE_GATEWAY_UPSTREAMS__{})",
                    key.to_uppercase()
                )
            })?;
            let channel = Endpoint::from_shared(url.clone())
                .map_err(|e| anyhow::anyhow!("upstreams.{key} = {url}: {e}"))?
                .connect_timeout(Duration::from_millis(cfg.upstream_connect_timeout_ms))
                .tcp_nodelay(true)
                .connect_lazy();
            by_package.insert(package.clone(), (key.to_owned(), channel));
        }
        let gateway_secret = match &cfg.server.gateway_secret {
            Some(secret) => Some(
                http::HeaderValue::from_str(secret.0.trim())
                    .map_err(|_| anyhow::anyhow!("server.gateway_secret must be visible ASCII"))?,
            ),
            None => None,
        };
        Ok(Self {
            by_package,
            gateway_secret,
        })
    }

    /// Vouches for the client facts in `headers` (replacing any `x-gateway-secret` a client
    /// sent; without a configured secret, removing it).
    pub fn vouch(&self, headers: &mut http::HeaderMap) {
        headers.remove(platform::caller::GATEWAY_SECRET);
        if let Some(secret) = &self.gateway_secret {
            headers.insert(platform::caller::GATEWAY_SECRET, secret.clone());
        }
    }

    /// [`Upstreams::vouch`] for the metadata of a transcoded call.
    pub fn vouch_metadata(&self, metadata: &mut MetadataMap) {
        let mut headers = std::mem::take(metadata).into_headers();
        self.vouch(&mut headers);
        *metadata = MetadataMap::from_headers(headers);
    }

    pub fn channel(&self, package: &str) -> Option<Channel> {
        self.by_package.get(package).map(|(_, c)| c.clone())
    }

    /// The channel serving a gRPC service (`transactions.auth.v1.AuthService`).
    pub fn for_service(&self, service: &str) -> Option<Channel> {
        let package = service.rsplit_once('.').map(|(p, _)| p)?;
        self.channel(package)
    }

    /// (upstream key, channel) pairs, one per distinct upstream key.
    pub fn distinct(&self) -> Vec<(String, Channel)> {
        let mut seen = HashMap::new();
        for (key, ch) in self.by_package.values() {
            seen.entry(key.clone()).or_insert_with(|| ch.clone());
        }
        let mut v: Vec<_> = seen.into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// The pause before the one retry of a call that certainly never reached the upstream.
pub const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Whether the one retry fits in a call's deadline, `elapsed` into it: the pause and the retry's
/// own time must fit, or the retry would only turn a clear `upstream_unavailable` into a timeout.
pub fn retry_fits(elapsed: Duration, deadline: Duration) -> bool {
    elapsed + 2 * RETRY_PAUSE < deadline
}

/// One unary call with an encoded request; the encoded response and its metadata. A call that
/// certainly was not sent ([`crate::error::never_sent`]: no connection, the channel not ready, the
/// stream refused or beyond a graceful GOAWAY) is sent once more after [`RETRY_PAUSE`] when the
/// deadline leaves room: safe for every RPC, as the upstream never saw the first attempt, and it
/// rides over an upstream's connection closing under a drain (a new connection reaches a replica
/// still serving) or a refused connect while it restarts.
pub async fn unary(
    channel: Channel,
    grpc_path: &str,
    request: Bytes,
    metadata: MetadataMap,
    timeout: Duration,
) -> Result<(MetadataMap, Bytes), Status> {
    let started = std::time::Instant::now();
    let first = unary_once(
        channel.clone(),
        grpc_path,
        request.clone(),
        metadata.clone(),
        timeout,
    )
    .await;
    match first {
        Err(status)
            if crate::error::never_sent(&status) && retry_fits(started.elapsed(), timeout) =>
        {
            tracing::info!(
                rpc = grpc_path,
                error = %status.message(),
                "upstream call not sent; retrying once"
            );
            metrics::counter!("gateway_upstream_retries_total", "door" => "http").increment(1);
            tokio::time::sleep(RETRY_PAUSE).await;
            let left = timeout.saturating_sub(started.elapsed());
            unary_once(channel, grpc_path, request, metadata, left).await
        }
        other => other,
    }
}

async fn unary_once(
    channel: Channel,
    grpc_path: &str,
    request: Bytes,
    metadata: MetadataMap,
    timeout: Duration,
) -> Result<(MetadataMap, Bytes), Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::from_error(Box::new(crate::error::NotSent(e.into()))))?;
    let path = http::uri::PathAndQuery::from_str(grpc_path)
        .map_err(|e| Status::internal(format!("bad method path: {e}")))?;
    let mut req = tonic::Request::from_parts(metadata, tonic::Extensions::default(), request);
    req.set_timeout(timeout);
    let resp = grpc.unary(req, path, BytesCodec).await?;
    let (md, body, _) = resp.into_parts();
    Ok((md, body))
}

/// A codec that moves already-encoded protobuf messages.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesCodec;

impl Codec for BytesCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = BytesCodec;
    type Decoder = BytesCodec;

    fn encoder(&mut self) -> Self::Encoder {
        BytesCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesCodec
    }
}

impl Encoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len)))
    }
}
