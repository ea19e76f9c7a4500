//! gRPC handlers: authenticate, parse the request → call the domain → map the result.

use std::sync::Arc;

use platform::{Caller, caller::RpcResult, token::TokenMaker};
use proto::webhooks::v1::{
    self as pb, CreateEndpointRequest, CreateEndpointResponse, DeleteEndpointRequest,
    DeleteEndpointResponse, ListDeliveriesRequest, ListDeliveriesResponse,
    ListDeliveryAttemptsRequest, ListDeliveryAttemptsResponse, ListEndpointsRequest,
    ListEndpointsResponse, ReplayDeliveryRequest, webhooks_service_server::WebhooksService,
};
use tonic::{Request, Response, Status};

use crate::{
    domain::{
        Endpoints,
        endpoints::{parse_delivery_id, parse_endpoint_id},
    },
    store::{AttemptRow, DeliveryRow, EndpointRow},
};

pub struct WebhooksApi {
    pub endpoints: Endpoints,
    pub tokens: Arc<dyn TokenMaker>,
}

impl WebhooksApi {
    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        Ok(platform::caller::authenticate(
            request.metadata(),
            &self.tokens,
        )?)
    }
}

#[tonic::async_trait]
impl WebhooksService for WebhooksApi {
    async fn create_endpoint(
        &self,
        request: Request<CreateEndpointRequest>,
    ) -> RpcResult<CreateEndpointResponse> {
        let caller = self.caller(&request)?;
        let req = request.get_ref();
        let registered = self
            .endpoints
            .register(&caller, &req.url, req.all_accounts)
            .await?;
        Ok(Response::new(CreateEndpointResponse {
            endpoint: Some(endpoint(registered.endpoint)),
            secret: registered.secret,
        }))
    }

    async fn list_endpoints(
        &self,
        request: Request<ListEndpointsRequest>,
    ) -> RpcResult<ListEndpointsResponse> {
        let caller = self.caller(&request)?;
        let rows = self.endpoints.list(&caller).await?;
        Ok(Response::new(ListEndpointsResponse {
            endpoints: rows.into_iter().map(endpoint).collect(),
        }))
    }

    async fn delete_endpoint(
        &self,
        request: Request<DeleteEndpointRequest>,
    ) -> RpcResult<DeleteEndpointResponse> {
        let caller = self.caller(&request)?;
        let id = parse_endpoint_id(&request.get_ref().id, "id")?;
        self.endpoints.delete(&caller, id).await?;
        Ok(Response::new(DeleteEndpointResponse {}))
    }

    async fn list_deliveries(
        &self,
        request: Request<ListDeliveriesRequest>,
    ) -> RpcResult<ListDeliveriesResponse> {
        let caller = self.caller(&request)?;
        let req = request.get_ref();
        let id = parse_endpoint_id(&req.endpoint_id, "endpoint_id")?;
        let (rows, next_page_token) = self
            .endpoints
            .deliveries(&caller, id, req.dead_only, req.page_size, &req.page_token)
            .await?;
        Ok(Response::new(ListDeliveriesResponse {
            deliveries: rows.into_iter().map(delivery).collect(),
            next_page_token,
        }))
    }

    async fn list_delivery_attempts(
        &self,
        request: Request<ListDeliveryAttemptsRequest>,
    ) -> RpcResult<ListDeliveryAttemptsResponse> {
        let caller = self.caller(&request)?;
        let id = parse_delivery_id(request.get_ref().delivery_id)?;
        let rows = self.endpoints.attempts(&caller, id).await?;
        Ok(Response::new(ListDeliveryAttemptsResponse {
            attempts: rows.into_iter().map(attempt).collect(),
        }))
    }

    async fn replay_delivery(
        &self,
        request: Request<ReplayDeliveryRequest>,
    ) -> RpcResult<pb::Delivery> {
        let caller = self.caller(&request)?;
        let id = parse_delivery_id(request.get_ref().delivery_id)?;
        let row = self.endpoints.replay(&caller, id).await?;
        Ok(Response::new(delivery(row)))
    }
}

fn endpoint(row: EndpointRow) -> pb::Endpoint {
    pb::Endpoint {
        id: row.id.to_string(),
        url: row.url,
        all_accounts: row.all_accounts,
        created_at: Some(proto::timestamp(row.created_at)),
    }
}

fn delivery(row: DeliveryRow) -> pb::Delivery {
    let status = match row.status.as_str() {
        "delivered" => pb::DeliveryStatus::Delivered,
        "dead" => pb::DeliveryStatus::Dead,
        _ => pb::DeliveryStatus::Pending,
    };
    pb::Delivery {
        id: row.id,
        endpoint_id: row.endpoint_id.to_string(),
        event_id: row.event_id.to_string(),
        event_type: row.event_type,
        status: status as i32,
        attempts: row.attempts,
        last_error: row.last_error.unwrap_or_default(),
        next_attempt_at: Some(proto::timestamp(row.next_attempt_at)),
        created_at: Some(proto::timestamp(row.created_at)),
        delivered_at: row.delivered_at.map(proto::timestamp),
    }
}

fn attempt(row: AttemptRow) -> pb::DeliveryAttempt {
    pb::DeliveryAttempt {
        attempted_at: Some(proto::timestamp(row.attempted_at)),
        status_code: row.status_code.unwrap_or(0),
        error: row.error.unwrap_or_default(),
        duration_ms: row.duration_ms,
    }
}
