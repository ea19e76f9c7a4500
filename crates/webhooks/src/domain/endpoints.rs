//! The operations of the API: register, list and delete endpoints, read their deliveries and
//! attempts, replay a delivery. Who may do what: an endpoint is its registering user's; only they
//! read or change it and its deliveries (anyone else gets NOT_FOUND, so ids reveal nothing). A
//! depositor's endpoint receives only the events of accounts the depositor owns; every event
//! (`all_accounts`) is for bankers.

use platform::{ApiError, Caller};
use sqlx::PgPool;
use uuid::Uuid;

use super::destination::{Policy, Refused};
use crate::store::{self, AttemptRow, DeliveryRow, EndpointRow};

/// A new endpoint and its secret (shown once).
pub struct Registered {
    pub endpoint: EndpointRow,
    pub secret: String,
}

pub struct Endpoints {
    pub db: PgPool,
    pub policy: Policy,
    pub max_per_user: i64,
    pub max_page_size: i32,
}

/// An endpoint id from the request ("parse, don't validate").
pub fn parse_endpoint_id(text: &str, field: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text.trim()).map_err(|_| ApiError::invalid_field(field, "must be a uuid"))
}

/// A delivery id from the request.
pub fn parse_delivery_id(id: i64) -> Result<i64, ApiError> {
    if id > 0 {
        Ok(id)
    } else {
        Err(ApiError::invalid_field(
            "delivery_id",
            "must be a positive id",
        ))
    }
}

fn endpoint_not_found() -> ApiError {
    ApiError::not_found("endpoint_not_found", "no such endpoint of yours")
}

fn delivery_not_found() -> ApiError {
    ApiError::not_found("delivery_not_found", "no such delivery of yours")
}

impl Endpoints {
    pub async fn register(
        &self,
        caller: &Caller,
        url: &str,
        all_accounts: bool,
    ) -> Result<Registered, ApiError> {
        if all_accounts {
            caller.require_banker()?;
        }
        platform::text::reject_control_chars("url", url)?;
        let url = self.policy.check_url(url.trim()).await.map_err(refusal)?;
        let secret = super::signature::new_secret();
        let endpoint = store::insert_endpoint(
            &self.db,
            caller.user_id,
            url.as_str(),
            &secret,
            all_accounts,
            self.max_per_user,
        )
        .await?
        .ok_or_else(|| {
            ApiError::failed_precondition(
                "endpoint_limit_reached",
                format!("at most {} endpoints per user", self.max_per_user),
            )
        })?;
        Ok(Registered { endpoint, secret })
    }

    pub async fn list(&self, caller: &Caller) -> Result<Vec<EndpointRow>, ApiError> {
        Ok(store::list_endpoints(&self.db, caller.user_id).await?)
    }

    pub async fn delete(&self, caller: &Caller, id: Uuid) -> Result<(), ApiError> {
        if store::delete_endpoint(&self.db, caller.user_id, id).await? {
            Ok(())
        } else {
            Err(endpoint_not_found())
        }
    }

    /// A page of the endpoint's deliveries, newest first; the next page token is the last id.
    pub async fn deliveries(
        &self,
        caller: &Caller,
        endpoint_id: Uuid,
        dead_only: bool,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<DeliveryRow>, String), ApiError> {
        if !store::endpoint_is_owned(&self.db, caller.user_id, endpoint_id).await? {
            return Err(endpoint_not_found());
        }
        let before =
            match page_token.trim() {
                "" => i64::MAX,
                t => t.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    ApiError::invalid_field("page_token", "not a token of this list")
                })?,
            };
        // AIP-158: a size above the maximum is lowered, not refused
        let size = if page_size <= 0 {
            self.max_page_size
        } else {
            page_size.min(self.max_page_size)
        };
        let rows =
            store::list_deliveries(&self.db, endpoint_id, dead_only, before, i64::from(size))
                .await?;
        let next = if rows.len() == size as usize {
            rows.last().map(|r| r.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok((rows, next))
    }

    pub async fn attempts(
        &self,
        caller: &Caller,
        delivery_id: i64,
    ) -> Result<Vec<AttemptRow>, ApiError> {
        match store::delivery_owner(&self.db, delivery_id).await? {
            Some(owner) if owner == caller.user_id => {
                Ok(
                    store::list_attempts(&self.db, delivery_id, i64::from(self.max_page_size))
                        .await?,
                )
            }
            _ => Err(delivery_not_found()),
        }
    }

    pub async fn replay(&self, caller: &Caller, delivery_id: i64) -> Result<DeliveryRow, ApiError> {
        let row = store::replay_delivery(&self.db, caller.user_id, delivery_id)
            .await?
            .ok_or_else(delivery_not_found)?;
        metrics::counter!("webhook_replays_total").increment(1);
        Ok(row)
    }
}

/// A refused URL is INVALID_ARGUMENT on `url`; a destination the policy forbids has its own
/// reason, so a client can tell "fix the URL" from "this address is not allowed".
fn refusal(refused: Refused) -> ApiError {
    let reason = match refused {
        Refused::NotPublic(_) | Refused::Unresolved => "destination_not_allowed",
        Refused::Invalid | Refused::Scheme | Refused::Credentials | Refused::TooLong => {
            "invalid_argument"
        }
    };
    ApiError::new(
        tonic::Code::InvalidArgument,
        reason,
        format!("url: {refused}"),
    )
    .with_violation("url", refused.to_string())
}
