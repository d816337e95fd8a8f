//! The server's clock and identifiers. The domain crate never reads the clock: these do.

use jiff::Timestamp;

/// Returns the current time truncated to microseconds, the precision stores keep.
pub fn now() -> Timestamp {
    mayfly_domain::audit::truncate_to_micros(Timestamp::now())
}

/// Returns a new time-ordered unique id for an audit event.
pub fn new_event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Returns a new request id, also sent back in the `x-request-id` header.
pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
