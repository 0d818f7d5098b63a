//! `pack.register`, `pack.list`, `pack.get`, `pack.remove`.

use std::path::PathBuf;

use attune_nats::api::{
    code, Empty, PackGetReply, PackListReply, PackRegisterReply, PackRegisterRequest,
    PackRemoveReply, RefRequest,
};
use attune_nats::wire::ApiError;

use super::{not_found, ApiResult};
use crate::registry::Registry;

/// Registers a pack from a directory on the registry's host, or from an uploaded archive.
pub async fn register(reg: &Registry, req: PackRegisterRequest) -> ApiResult<PackRegisterReply> {
    let done = match (req.path, req.digest) {
        (Some(path), None) => reg.register_dir(PathBuf::from(path)).await?,
        (None, Some(digest)) => reg.register_upload(digest).await?,
        _ => {
            return Err(ApiError::new(
                code::BAD_REQUEST,
                "give exactly one of \"path\" (a directory on the registry's host) or \"digest\" (an uploaded archive)",
            ))
        }
    };
    Ok(PackRegisterReply {
        pack: done.pack,
        warnings: done.warnings,
    })
}

/// Every registered pack.
pub async fn list(reg: &Registry, _: Empty) -> ApiResult<PackListReply> {
    Ok(PackListReply {
        packs: reg.snapshot().await?.packs,
    })
}

/// One pack with what it defines.
pub async fn get(reg: &Registry, req: RefRequest) -> ApiResult<PackGetReply> {
    let snap = reg.snapshot().await?;
    let pack = snap
        .packs
        .into_iter()
        .find(|p| p.reference == req.reference)
        .ok_or_else(|| not_found(format!("no pack \"{}\" is registered", req.reference)))?;
    Ok(PackGetReply {
        runtimes: snap
            .runtimes
            .into_iter()
            .filter(|r| r.pack == pack.reference)
            .collect(),
        actions: snap
            .actions
            .into_iter()
            .filter(|a| a.pack == pack.reference)
            .collect(),
        sensors: snap
            .sensors
            .into_iter()
            .filter(|s| s.pack == pack.reference)
            .collect(),
        rules: snap
            .rules
            .into_iter()
            .filter(|r| r.pack == pack.reference)
            .collect(),
        pack,
    })
}

/// Removes a pack and everything it defined.
pub async fn remove(reg: &Registry, req: RefRequest) -> ApiResult<PackRemoveReply> {
    reg.remove_pack(req.reference.clone()).await?;
    Ok(PackRemoveReply {
        removed: req.reference,
    })
}
