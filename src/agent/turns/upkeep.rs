//! What the API asks of the runner besides turns: forgetting memory (OpenAI's
//! `DELETE /v1/memory`) and whether turns can be stored now (`/health`).
//!
//! The surfaces reach the store only through the runner, so the store stays an implementation
//! detail of turns: the API sees these small reports, never a `Store`.

use super::TurnRunner;
use crate::store::{MIN_FREE_DISK_BYTES, StoreError};

/// Memory could not be forgotten: the store refused the write (its message says why).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ForgetError(#[from] StoreError);

/// Whether the runner can store turns now, as `/health` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnHealth {
    /// What fails: a read, or the last write (when none has succeeded since); `None` if all is
    /// well.
    pub database_error: Option<String>,
    /// Free space on the data disk, when known.
    pub disk_free_bytes: Option<u64>,
    /// New turns are refused: the data disk has less free space than `disk_floor_bytes`.
    pub disk_low: bool,
    /// The free space below which new turns are refused.
    pub disk_floor_bytes: u64,
}

impl TurnHealth {
    pub fn is_ok(&self) -> bool {
        self.database_error.is_none() && !self.disk_low
    }
}

impl TurnRunner {
    /// Forgets the memory of `thread_id`, or of every thread: later turns no longer see it,
    /// the log keeps every row. Returns how many messages were forgotten.
    pub async fn forget(&self, thread_id: Option<&str>) -> Result<usize, ForgetError> {
        Ok(self.store.forget(thread_id).await?)
    }

    /// Whether turns can be stored now (read fresh: a box recovers by itself).
    pub async fn health(&self) -> TurnHealth {
        let health = self.store.health().await;
        TurnHealth {
            disk_low: health.disk_low(),
            database_error: health.database_error,
            disk_free_bytes: health.disk_free_bytes,
            disk_floor_bytes: MIN_FREE_DISK_BYTES,
        }
    }
}
