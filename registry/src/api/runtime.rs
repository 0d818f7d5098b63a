//! `runtime.list`, `runtime.get`, `version.set_default`, `version.set_enabled`.

use attune_nats::api::{
    Empty, NameRequest, RuntimeListReply, RuntimeReply, SetDefaultRequest, SetEnabledRequest,
};

use super::ApiResult;
use crate::registry::Registry;

/// Every runtime with its versions and their state.
pub async fn list(reg: &Registry, _: Empty) -> ApiResult<RuntimeListReply> {
    Ok(RuntimeListReply {
        runtimes: reg.snapshot().await?.runtimes,
    })
}

/// One runtime, by name or alias.
pub async fn get(reg: &Registry, req: NameRequest) -> ApiResult<RuntimeReply> {
    Ok(RuntimeReply {
        runtime: reg.runtime(&req.name).await?,
    })
}

/// Makes a version the default; selection changes before the reply is sent.
pub async fn set_default(reg: &Registry, req: SetDefaultRequest) -> ApiResult<RuntimeReply> {
    Ok(RuntimeReply {
        runtime: reg.set_default(&req.runtime, req.version).await?,
    })
}

/// Enables or disables a version; selection changes before the reply is sent.
pub async fn set_enabled(reg: &Registry, req: SetEnabledRequest) -> ApiResult<RuntimeReply> {
    Ok(RuntimeReply {
        runtime: reg
            .set_enabled(&req.runtime, req.version, req.enabled)
            .await?,
    })
}
