//! The scheduling queue: an active heap ordered by priority then arrival
//! (FIFO), a backoff area, and the unschedulable pods that wait for a
//! cluster change (or five minutes) before they are tried again.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    Active,
    InFlight,
    Backoff(Instant),
    Unschedulable(Instant),
}

#[derive(Debug)]
struct Entry {
    pod: Arc<Pod>,
    seq: u64,
    priority: i32,
    state: State,
    attempts: u32,
    fingerprint: u64,
    moves_at_pop: u64,
    last_message: String,
}

#[derive(Default)]
pub struct Queue {
    heap: BinaryHeap<(i32, Reverse<u64>, String)>,
    pods: HashMap<String, Entry>,
    seq: u64,
    moves: u64,
    /// When a backoff or unschedulable entry is due, with the entry's seq then.
    timers: BinaryHeap<Reverse<(Instant, u64, String)>>,
    /// Keys in the Unschedulable state, so a cluster change touches only them.
    unschedulable: HashSet<String>,
}

/// What about a pod can make it schedulable: its labels and spec.
fn fingerprint(pod: &Pod) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&pod.metadata.labels).unwrap_or_default().hash(&mut h);
    serde_json::to_string(&pod.spec).unwrap_or_default().hash(&mut h);
    h.finish()
}

fn backoff(attempts: u32) -> Duration {
    (INITIAL_BACKOFF * 2u32.saturating_pow(attempts.saturating_sub(1).min(10))).min(MAX_BACKOFF)
}

impl Queue {
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    fn push(&mut self, key: &str) {
        self.unschedulable.remove(key);
        if let Some(e) = self.pods.get_mut(key) {
            self.seq += 1;
            e.seq = self.seq;
            e.state = State::Active;
            self.heap.push((e.priority, Reverse(e.seq), key.to_string()));
        }
    }

    /// A pending pod was added or updated.
    pub fn upsert(&mut self, key: &str, pod: Arc<Pod>) {
        let fp = fingerprint(&pod);
        let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        match self.pods.get_mut(key) {
            Some(e) => {
                let changed = e.fingerprint != fp;
                e.pod = pod;
                e.fingerprint = fp;
                e.priority = priority;
                if changed && matches!(e.state, State::Unschedulable(_) | State::Backoff(_)) {
                    self.push(key);
                }
            }
            None => {
                let e = Entry { pod, seq: 0, priority, state: State::Active, attempts: 0, fingerprint: fp, moves_at_pop: 0, last_message: String::new() };
                self.pods.insert(key.to_string(), e);
                self.push(key);
            }
        }
    }

    /// A pod to be retried after a failed bind.
    pub fn requeue_backoff(&mut self, key: &str, pod: Arc<Pod>) {
        self.upsert(key, pod);
        if let Some(e) = self.pods.get_mut(key) {
            e.attempts += 1;
            let due = Instant::now() + backoff(e.attempts);
            self.set_state(key, State::Backoff(due), due);
        }
    }

    /// Puts an entry in a waiting state with a timer at `due`.
    fn set_state(&mut self, key: &str, state: State, due: Instant) {
        let Some(e) = self.pods.get_mut(key) else { return };
        self.seq += 1;
        e.seq = self.seq;
        e.state = state;
        if matches!(state, State::Unschedulable(_)) {
            self.unschedulable.insert(key.to_string());
        } else {
            self.unschedulable.remove(key);
        }
        self.timers.push(Reverse((due, e.seq, key.to_string())));
    }

    pub fn remove(&mut self, key: &str) {
        self.pods.remove(key);
        self.unschedulable.remove(key);
    }

    /// The next pod to schedule: highest priority, then oldest.
    pub fn pop(&mut self) -> Option<(String, Arc<Pod>)> {
        while let Some((_, Reverse(seq), key)) = self.heap.pop() {
            if let Some(e) = self.pods.get_mut(&key) {
                if e.seq == seq && e.state == State::Active {
                    e.state = State::InFlight;
                    e.moves_at_pop = self.moves;
                    return Some((key, e.pod.clone()));
                }
            }
        }
        None
    }

    /// The pod was assumed onto a node; the queue forgets it.
    pub fn done(&mut self, key: &str) {
        self.remove(key);
    }

    /// No node fits. Returns whether `message` differs from the last one reported.
    pub fn unschedulable(&mut self, key: &str, message: &str) -> bool {
        let moved = self.moves;
        let Some(e) = self.pods.get_mut(key) else { return false };
        e.attempts += 1;
        let changed = e.last_message != message;
        e.last_message = message.to_string();
        let now = Instant::now();
        // The cluster changed while we were deciding: try again after the backoff.
        if e.moves_at_pop != moved {
            let due = now + backoff(e.attempts);
            self.set_state(key, State::Backoff(due), due);
        } else {
            self.set_state(key, State::Unschedulable(now), now + MAX_UNSCHEDULABLE);
        }
        changed
    }

    /// Something in the cluster changed that may make unschedulable pods fit.
    pub fn move_all(&mut self) {
        self.moves += 1;
        for key in std::mem::take(&mut self.unschedulable) {
            let Some(e) = self.pods.get(&key) else { continue };
            if let State::Unschedulable(since) = e.state {
                let due = since + backoff(e.attempts);
                self.set_state(&key, State::Backoff(due), due);
                self.unschedulable.remove(&key);
            }
        }
    }

    /// Moves pods whose backoff expired (or that waited too long) to active;
    /// returns when to call again.
    pub fn flush(&mut self, now: Instant) -> Option<Instant> {
        while let Some(Reverse((due, seq, _))) = self.timers.peek() {
            if *due > now {
                return Some(*due);
            }
            let _ = seq;
            let Reverse((_, seq, key)) = self.timers.pop().unwrap();
            let live = self.pods.get(&key).is_some_and(|e| e.seq == seq && matches!(e.state, State::Backoff(_) | State::Unschedulable(_)));
            if live {
                self.push(&key);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;

    fn pod(prio: i32) -> Arc<Pod> {
        Arc::new(Pod { spec: Some(PodSpec { priority: Some(prio), ..Default::default() }), ..Default::default() })
    }

    #[test]
    fn priority_then_fifo() {
        let mut q = Queue::default();
        q.upsert("a", pod(0));
        q.upsert("b", pod(10));
        q.upsert("c", pod(0));
        let order: Vec<String> = std::iter::from_fn(|| q.pop().map(|(k, _)| k)).collect();
        assert_eq!(order, ["b", "a", "c"]);
    }

    #[test]
    fn unschedulable_waits_for_a_move_and_backoff() {
        let mut q = Queue::default();
        q.upsert("a", pod(0));
        q.pop().unwrap();
        q.unschedulable("a", "no");
        assert!(q.pop().is_none());
        q.flush(Instant::now());
        assert!(q.pop().is_none());
        q.move_all();
        q.flush(Instant::now() + Duration::from_secs(2));
        assert_eq!(q.pop().unwrap().0, "a");
    }
}
