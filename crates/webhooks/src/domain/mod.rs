//! The webhooks service's operations and the types they take: the API's operations
//! ([`endpoints`]), a ledger event and the body sent for it ([`event`]), the signature
//! ([`signature`]), where a delivery may go ([`destination`]) and the deliverer with its
//! retries ([`deliverer`]).

pub mod deliverer;
pub mod destination;
pub mod endpoints;
pub mod event;
pub mod signature;

pub use deliverer::Deliverer;
pub use destination::Policy;
pub use endpoints::Endpoints;
pub use event::LedgerEvent;
