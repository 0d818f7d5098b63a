//! `trigger.list`, `trigger.get`: the registered trigger types and their payload schemas.

use attune_nats::api::{PackFilter, RefRequest, TriggerListReply, TriggerReply};

use super::{not_found, ApiResult};
use crate::registry::Registry;

/// All trigger types, or one pack's.
pub async fn list(reg: &Registry, req: PackFilter) -> ApiResult<TriggerListReply> {
    let triggers = reg
        .snapshot()
        .await?
        .triggers
        .into_iter()
        .filter(|t| req.pack.as_ref().is_none_or(|p| &t.pack == p))
        .collect();
    Ok(TriggerListReply { triggers })
}

/// One trigger type by ref.
pub async fn get(reg: &Registry, req: RefRequest) -> ApiResult<TriggerReply> {
    reg.snapshot()
        .await?
        .triggers
        .into_iter()
        .find(|t| t.reference == req.reference)
        .map(|trigger| TriggerReply { trigger })
        .ok_or_else(|| {
            not_found(format!(
                "no trigger type \"{}\" is registered (`attune trigger list` shows them)",
                req.reference
            ))
        })
}
