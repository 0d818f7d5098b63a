//! `resolve`: which version and subject an action would use, and why.
//!
//! Answered from the same [`View`](crate::view::View) as the router, so `attune resolve` tells
//! exactly what a by-name invocation would do at that moment.

use attune_nats::api::{code, ResolveReply, ResolveRequest};
use attune_nats::wire::ApiError;

use super::{not_found, ApiResult};
use crate::registry::Registry;
use crate::view::ResolveError;

/// Resolves an action, optionally under another constraint.
pub async fn resolve(reg: &Registry, req: ResolveRequest) -> ApiResult<ResolveReply> {
    reg.view
        .resolve(&req.action, req.constraint.as_deref())
        .map_err(|e| match e {
            ResolveError::UnknownAction(_) => not_found(e.to_string()),
            ResolveError::BadConstraint(_) => ApiError::new(code::BAD_REQUEST, e.to_string()),
        })
}
