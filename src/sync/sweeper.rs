//! The background sweeper of abandoned uploads.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::SyncService;

/// How many expired uploads one sweep handles before yielding.
const SWEEP_BATCH: usize = 100;

impl SyncService {
    /// Runs until `stop` is cancelled: every `interval`, abandons expired pending uploads
    /// and deletes their bytes.
    pub async fn run_sweeper(self, interval: Duration, stop: CancellationToken) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            loop {
                match self.sweep_uploads(SWEEP_BATCH).await {
                    Ok(n) if n > 0 => {
                        tracing::info!(swept = n, "abandoned expired uploads");
                        if n < SWEEP_BATCH {
                            break;
                        }
                    }
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = ?e, "upload sweep failed; retrying later");
                        break;
                    }
                }
            }
        }
    }
}
