//! Image garbage collection under disk pressure, with upstream kubelet's
//! defaults: when the filesystem holding the agent's data is 85 % used,
//! images no container uses are removed, least recently used first, until
//! usage is back at 80 %. Images pulled, imported or used in the last two
//! minutes stay (upstream's `imageMinimumGCAge`): a pod may be about to
//! start from one.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::{hostinfo, Agent};

const HIGH_THRESHOLD_PERCENT: u64 = 85;
const LOW_THRESHOLD_PERCENT: u64 = 80;
const CHECK_EVERY: Duration = Duration::from_secs(60);
const MINIMUM_AGE: Duration = Duration::from_secs(120);

/// Bytes to free to bring usage from at or above the high threshold down to
/// the low one; 0 below the high threshold.
pub fn bytes_to_free(total: u64, available: u64) -> u64 {
    let used = total.saturating_sub(available);
    if total == 0 || used * 100 < total * HIGH_THRESHOLD_PERCENT {
        return 0;
    }
    used.saturating_sub(total * LOW_THRESHOLD_PERCENT / 100)
}

pub(crate) async fn run(agent: Arc<Agent>) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tick.tick().await;
        let (total, available) = hostinfo::filesystem(&agent.config.data_dir);
        let want = bytes_to_free(total, available);
        if want == 0 {
            continue;
        }
        let in_use: HashSet<String> = match agent.runtime.list_containers(None).await {
            Ok(cs) => cs.into_iter().flat_map(|c| [c.image, c.image_id]).collect(),
            Err(e) => {
                tracing::warn!("image GC: listing containers: {e:#}");
                continue;
            }
        };
        match agent.images.garbage_collect(&in_use, want, MINIMUM_AGE).await {
            Ok(freed) if freed < want => {
                tracing::warn!(wanted = want, freed, "image GC: disk still above {LOW_THRESHOLD_PERCENT}% after removing unused images")
            }
            Ok(freed) => tracing::info!(freed, "image GC: removed unused images"),
            Err(e) => tracing::warn!("image GC: {e:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bytes_to_free;

    #[test]
    fn frees_down_to_the_low_threshold_only_above_the_high_one() {
        assert_eq!(bytes_to_free(1000, 200), 0); // 80 % used
        assert_eq!(bytes_to_free(1000, 151), 0); // 84.9 %
        assert_eq!(bytes_to_free(1000, 150), 50); // 85 % -> 80 %
        assert_eq!(bytes_to_free(1000, 0), 200); // full
        assert_eq!(bytes_to_free(0, 0), 0); // unknown filesystem
    }
}
