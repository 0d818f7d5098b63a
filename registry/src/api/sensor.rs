//! `sensor.list`, `sensor.get`, `sensor.set_enabled`: sensors, with where each runs now.
//!
//! Where a sensor runs is not registry state: the runner holding its lease writes it in KV
//! `attune-sensors`, so each answer reads the leases there. A lease that cannot be read is shown
//! as "not running" rather than failing the whole answer.

use async_nats::jetstream::kv::Store;
use attune_nats::api::{
    PackFilter, RefRequest, SensorListReply, SensorReply, SensorSetEnabledRequest, SensorStatus,
};
use attune_nats::jetstream::{open_kv, Bucket};
use attune_nats::wire::SensorLease;
use attune_nats::Sensor;
use tracing::debug;

use super::{not_found, ApiResult};
use crate::registry::Registry;

/// All sensors, or one pack's, each with its lease.
pub async fn list(reg: &Registry, req: PackFilter) -> ApiResult<SensorListReply> {
    let leases = leases(reg).await;
    let mut sensors = Vec::new();
    for sensor in reg.snapshot().await?.sensors {
        if req.pack.as_ref().is_none_or(|p| &sensor.pack == p) {
            sensors.push(status(leases.as_ref(), sensor).await);
        }
    }
    Ok(SensorListReply { sensors })
}

/// One sensor by ref, with its lease.
pub async fn get(reg: &Registry, req: RefRequest) -> ApiResult<SensorReply> {
    let sensor = reg
        .snapshot()
        .await?
        .sensors
        .into_iter()
        .find(|s| s.reference == req.reference)
        .ok_or_else(|| not_found(format!("no sensor \"{}\" is registered", req.reference)))?;
    let leases = leases(reg).await;
    Ok(SensorReply {
        status: status(leases.as_ref(), sensor).await,
    })
}

/// Enables or disables a sensor: runners start or stop it within a second.
pub async fn set_enabled(reg: &Registry, req: SensorSetEnabledRequest) -> ApiResult<SensorReply> {
    let sensor = reg.set_sensor_enabled(req.reference, req.enabled).await?;
    let leases = leases(reg).await;
    Ok(SensorReply {
        status: status(leases.as_ref(), sensor).await,
    })
}

/// The leases bucket, if it can be opened now.
async fn leases(reg: &Registry) -> Option<Store> {
    match open_kv(reg.publisher.jetstream(), &reg.ns, Bucket::Sensors).await {
        Ok(kv) => Some(kv),
        Err(e) => {
            debug!(error = %e, "cannot open the sensor leases");
            None
        }
    }
}

/// `sensor` with its lease, if one is held and readable.
async fn status(leases: Option<&Store>, sensor: Sensor) -> SensorStatus {
    let lease = match leases {
        Some(kv) => kv
            .get(&sensor.reference)
            .await
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<SensorLease>(&b).ok()),
        None => None,
    };
    SensorStatus { sensor, lease }
}
