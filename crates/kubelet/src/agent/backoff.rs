//! Per-key exponential back-off, as kubelet's `flowcontrol.Backoff`: used for
//! restarting crashed containers (CrashLoopBackOff) and for failed image
//! pulls (ImagePullBackOff). The first failure is retried at once; each
//! later one waits twice as long (10 s, 20 s, ... up to 5 min), and a key
//! that stayed quiet for twice the maximum starts over.

use std::collections::HashMap;
use std::time::{Duration, Instant};

pub const INITIAL: Duration = Duration::from_secs(10);
pub const MAX: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug)]
struct Entry {
    backoff: Duration,
    last_update: Instant,
}

#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    entries: HashMap<String, Entry>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(INITIAL, MAX)
    }
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max, entries: HashMap::new() }
    }

    fn expired(&self, e: &Entry, at: Instant) -> bool {
        at.saturating_duration_since(e.last_update) > self.max * 2
    }

    /// Records a failure that happened at `at` and returns the delay now in force.
    pub fn next(&mut self, key: &str, at: Instant) -> Duration {
        let backoff = match self.entries.get(key) {
            Some(e) if !self.expired(e, at) => (e.backoff * 2).min(self.max),
            _ => self.initial,
        };
        self.entries.insert(key.to_string(), Entry { backoff, last_update: at });
        backoff
    }

    /// How long is left to wait after an event (a crash, a failed pull) at
    /// `event`, as of `now`; None when the key may be retried.
    pub fn remaining(&self, key: &str, event: Instant, now: Instant) -> Option<Duration> {
        let e = self.entries.get(key)?;
        if self.expired(e, event) {
            return None;
        }
        let elapsed = now.saturating_duration_since(event);
        (elapsed < e.backoff).then(|| e.backoff - elapsed)
    }

    /// The delay currently recorded for a key (for messages like "back-off 20s").
    pub fn current(&self, key: &str) -> Option<Duration> {
        self.entries.get(key).map(|e| e.backoff)
    }

    pub fn reset(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

/// Go's duration formatting for whole seconds ("10s", "1m20s", "5m0s"), as in
/// upstream's "back-off 1m20s restarting failed container" message.
pub fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_maximum_then_resets_after_quiet() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        assert_eq!(b.remaining("c", t0, t0), None, "the first failure is retried at once");
        let seq: Vec<u64> = (0..7).map(|i| b.next("c", t0 + Duration::from_secs(i)).as_secs()).collect();
        assert_eq!(seq, vec![10, 20, 40, 80, 160, 300, 300]);
        // Quiet for more than twice the maximum: back to the start.
        assert_eq!(b.next("c", t0 + Duration::from_secs(6 + 601)).as_secs(), 10);
    }

    #[test]
    fn remaining_counts_from_the_event() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        b.next("c", t0);
        b.next("c", t0); // 20 s now
        assert_eq!(b.remaining("c", t0, t0 + Duration::from_secs(5)), Some(Duration::from_secs(15)));
        assert_eq!(b.remaining("c", t0, t0 + Duration::from_secs(20)), None);
        assert_eq!(b.remaining("other", t0, t0), None);
        b.reset("c");
        assert_eq!(b.current("c"), None);
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_secs(80)), "1m20s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
    }
}
