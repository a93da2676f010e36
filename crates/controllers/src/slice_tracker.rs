//! What the EndpointSlice controller itself wrote, as upstream's
//! `EndpointSliceTracker`: a slice it created, updated or deleted may not be
//! in its informer's cache yet, and a sync from that stale cache would
//! create a second slice for the same Service. A Service whose slices the
//! cache has not caught up with is skipped; the watch event of our own
//! write brings it back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A write the cache never shows (someone else deleted the slice first) is
/// given up after this, so the Service is not skipped for ever.
const GIVE_UP: Duration = Duration::from_secs(60);

/// What the cache must show for a slice we wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// At least this resourceVersion.
    Written(u64),
    Deleted,
}

#[derive(Default)]
pub struct SliceTracker {
    /// (namespace, service) -> slice name -> expectation.
    services: HashMap<(String, String), HashMap<String, (Expect, Instant)>>,
}

impl SliceTracker {
    pub fn wrote(&mut self, ns: &str, service: &str, slice: &str, resource_version: Option<&str>) {
        let rv = resource_version.and_then(|rv| rv.parse().ok()).unwrap_or(0);
        self.services.entry((ns.into(), service.into())).or_default().insert(slice.into(), (Expect::Written(rv), Instant::now()));
    }

    pub fn deleted(&mut self, ns: &str, service: &str, slice: &str) {
        self.services.entry((ns.into(), service.into())).or_default().insert(slice.into(), (Expect::Deleted, Instant::now()));
    }

    /// Whether the cached slices (name, resourceVersion) of a Service miss
    /// one of our writes. Expectations the cache meets are forgotten.
    pub fn stale(&mut self, ns: &str, service: &str, cached: &[(String, Option<String>)]) -> bool {
        let key = (ns.to_string(), service.to_string());
        let Some(expected) = self.services.get_mut(&key) else { return false };
        expected.retain(|name, (expect, since)| {
            if since.elapsed() > GIVE_UP {
                return false;
            }
            let seen = cached.iter().find(|(n, _)| n == name).map(|(_, rv)| rv.as_deref().and_then(|rv| rv.parse::<u64>().ok()).unwrap_or(0));
            match (*expect, seen) {
                (Expect::Written(want), Some(rv)) => rv < want,
                (Expect::Written(_), None) => true,
                (Expect::Deleted, seen) => seen.is_some(),
            }
        });
        let stale = !expected.is_empty();
        if !stale {
            self.services.remove(&key);
        }
        stale
    }

    /// Forgets a Service (it is gone and its slices deleted).
    pub fn forget(&mut self, ns: &str, service: &str) {
        self.services.remove(&(ns.to_string(), service.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(items: &[(&str, &str)]) -> Vec<(String, Option<String>)> {
        items.iter().map(|(n, rv)| (n.to_string(), Some(rv.to_string()))).collect()
    }

    #[test]
    fn a_created_slice_the_cache_has_not_seen_makes_the_service_stale() {
        let mut t = SliceTracker::default();
        assert!(!t.stale("ns", "web", &[]), "nothing written: the cache is trusted");
        t.wrote("ns", "web", "web-abc", Some("12"));
        // The sync that would have created a duplicate: our create is not cached yet.
        assert!(t.stale("ns", "web", &[]));
        assert!(t.stale("ns", "web", &cached(&[("web-abc", "11")])), "an older version is not our write");
        assert!(!t.stale("ns", "web", &cached(&[("web-abc", "12")])));
        assert!(t.services.is_empty(), "met expectations are forgotten");
        assert!(!t.stale("ns", "other", &[]), "per service");
    }

    #[test]
    fn a_deleted_slice_still_cached_makes_the_service_stale() {
        let mut t = SliceTracker::default();
        t.wrote("ns", "web", "web-a", Some("5"));
        t.deleted("ns", "web", "web-b");
        assert!(t.stale("ns", "web", &cached(&[("web-a", "5"), ("web-b", "3")])));
        assert!(!t.stale("ns", "web", &cached(&[("web-a", "6")])));
        t.deleted("ns", "web", "web-a");
        t.forget("ns", "web");
        assert!(!t.stale("ns", "web", &cached(&[("web-a", "6")])));
    }
}
