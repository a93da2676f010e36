//! Upstream's ControllerExpectations: pods an owner created or deleted that
//! the shared pod store does not show yet. Until it does, the owner's view
//! of its pods trails its own writes, so it must not create or delete more.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A write whose event never shows up (a pod created and deleted before we
/// noted it) stops blocking its owner after this (upstream ExpectationsTimeout).
const TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Pending {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    since: Option<Instant>,
}

/// By owner uid, the pod names whose creation or deletion is not seen yet.
#[derive(Default)]
pub struct Expectations(Mutex<HashMap<String, Pending>>);

impl Expectations {
    pub fn expect_creates(&self, owner: &str, names: impl IntoIterator<Item = String>) {
        self.update(owner, |p| p.creates.extend(names));
    }

    pub fn expect_deletes(&self, owner: &str, names: impl IntoIterator<Item = String>) {
        self.update(owner, |p| p.deletes.extend(names));
    }

    /// A delete that failed will never be seen.
    pub fn forget_delete(&self, owner: &str, name: &str) {
        self.update(owner, |p| _ = p.deletes.remove(name));
    }

    /// Notes a pod the watch showed: `gone` when it is terminating or deleted.
    pub fn observe(&self, owner: &str, name: &str, gone: bool) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = all.get_mut(owner) else { return };
        p.creates.remove(name);
        if gone {
            p.deletes.remove(name);
        }
        if p.creates.is_empty() && p.deletes.is_empty() {
            all.remove(owner);
        }
    }

    /// True when every write of this owner was seen, or they timed out.
    pub fn satisfied(&self, owner: &str) -> bool {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match all.get(owner) {
            Some(p) if p.since.is_some_and(|t| t.elapsed() < TIMEOUT) => false,
            Some(_) => {
                all.remove(owner);
                true
            }
            None => true,
        }
    }

    fn update(&self, owner: &str, f: impl FnOnce(&mut Pending)) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let p = all.entry(owner.to_string()).or_default();
        p.since = Some(Instant::now());
        f(p);
        if p.creates.is_empty() && p.deletes.is_empty() {
            all.remove(owner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn satisfied_once_every_write_is_seen() {
        let e = Expectations::default();
        e.expect_creates("ds", ["a".to_string(), "b".to_string()]);
        e.expect_deletes("ds", ["old".to_string()]);
        assert!(!e.satisfied("ds"));
        e.observe("ds", "a", false);
        e.observe("ds", "b", false);
        e.observe("ds", "old", false);
        assert!(!e.satisfied("ds"), "old is not gone yet");
        e.observe("ds", "old", true);
        assert!(e.satisfied("ds") && e.satisfied("other"));
        e.expect_deletes("ds", ["x".to_string()]);
        e.forget_delete("ds", "x");
        assert!(e.satisfied("ds"));
    }
}
