//! Recording core/v1 Events the way upstream's event recorder does, for the
//! controllers, the scheduler and the node agent, with its correlation:
//! - an event repeating one already written (same object, type, reason and
//!   message) bumps that event's `count` and `lastTimestamp`;
//! - from the 10th event in 10 minutes that differs only in message, the
//!   rest fold into one "(combined from similar events): ..." event;
//! - each source and object may write 25 times at once, then once per 5
//!   minutes; what goes over is dropped.
//!
//! A ReplicaSet creating 1,000 pods so writes about 25 events, not 1,000.

use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde_json::json;

/// Upstream's defaults (client-go tools/record).
const SIMILAR_EVENTS: usize = 10;
const SIMILAR_WINDOW: Duration = Duration::from_secs(600);
const BURST: f64 = 25.0;
const REFILL_EVERY: Duration = Duration::from_secs(300);
/// Each cache is pruned of entries idle for a window once it holds this many.
const CACHE_ENTRIES: usize = 4096;

/// What an event is: who reports it, about what, and what happened.
pub struct Report<'a> {
    pub component: &'a str,
    pub instance: &'a str,
    /// The node the reporter runs on (`source.host`); the node agent sets it.
    pub host: Option<&'a str>,
    pub about: ObjectReference,
    pub type_: &'a str,
    pub reason: &'a str,
    pub action: Option<&'a str>,
    pub message: String,
}

/// The write the correlator decides on; `key` names the event in its cache.
#[derive(Debug, PartialEq)]
enum Write {
    Create { key: String, name: String, message: String },
    Bump { key: String, name: String, count: i32, message: String },
}

struct Similar {
    messages: HashSet<String>,
    since: Instant,
}

/// An event written. One write of it is in flight at a time, so count
/// bumps land in order; repeats meanwhile go out in the next write.
struct Written {
    name: String,
    count: i32,
    message: String,
    at: Instant,
    in_flight: bool,
    dirty: bool,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Default)]
struct Correlator {
    similar: HashMap<String, Similar>,
    written: HashMap<String, Written>,
    buckets: HashMap<String, Bucket>,
}

impl Correlator {
    fn decide(&mut self, r: &Report, now: Instant) -> Option<Write> {
        let o = &r.about;
        let object = format!(
            "{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
            r.component,
            r.instance,
            o.api_version.as_deref().unwrap_or_default(),
            o.kind.as_deref().unwrap_or_default(),
            o.namespace.as_deref().unwrap_or_default(),
            o.name.as_deref().unwrap_or_default(),
            o.uid.as_deref().unwrap_or_default()
        );
        prune(&mut self.buckets, now, |b| b.at);
        let bucket = self.buckets.entry(object.clone()).or_insert(Bucket { tokens: BURST, at: now });
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() / REFILL_EVERY.as_secs_f64()).min(BURST);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return None;
        }
        bucket.tokens -= 1.0;

        let aggregate = format!("{object}\u{0}{}\u{0}{}\u{0}{}", o.field_path.as_deref().unwrap_or_default(), r.type_, r.reason);
        prune(&mut self.similar, now, |s| s.since);
        let similar = self.similar.entry(aggregate.clone()).or_insert_with(|| Similar { messages: HashSet::new(), since: now });
        if now.duration_since(similar.since) > SIMILAR_WINDOW {
            *similar = Similar { messages: HashSet::new(), since: now };
        }
        similar.messages.insert(r.message.clone());
        let (key, message) = if similar.messages.len() >= SIMILAR_EVENTS {
            (aggregate, format!("(combined from similar events): {}", r.message))
        } else {
            (format!("{aggregate}\u{0}{}", r.message), r.message.clone())
        };

        prune(&mut self.written, now, |w| w.at);
        if let Some(w) = self.written.get_mut(&key) {
            (w.count, w.message, w.at) = (w.count + 1, message, now);
            if w.in_flight {
                w.dirty = true;
                return None;
            }
            w.in_flight = true;
            return Some(Write::Bump { key, name: w.name.clone(), count: w.count, message: w.message.clone() });
        }
        let name = format!("{}.{:x}", o.name.as_deref().unwrap_or("object"), Utc::now().timestamp_nanos_opt().unwrap_or(0));
        let written = Written { name: name.clone(), count: 1, message: message.clone(), at: now, in_flight: true, dirty: false };
        self.written.insert(key.clone(), written);
        Some(Write::Create { key, name, message })
    }

    /// After a write of the event `key`: the repeats seen meanwhile, if any.
    fn done(&mut self, key: &str) -> Option<Write> {
        let w = self.written.get_mut(key)?;
        if !std::mem::take(&mut w.dirty) {
            w.in_flight = false;
            return None;
        }
        Some(Write::Bump { key: key.to_string(), name: w.name.clone(), count: w.count, message: w.message.clone() })
    }
}

/// Keeps a cache near its bound (upstream's are LRUs of 4,096): at the bound,
/// drop entries idle for a window, and if that is not enough the older half,
/// so the cost is paid once per many insertions, not on every event.
fn prune<V>(cache: &mut HashMap<String, V>, now: Instant, at: impl Fn(&V) -> Instant) {
    if cache.len() < CACHE_ENTRIES {
        return;
    }
    cache.retain(|_, v| now.duration_since(at(v)) < SIMILAR_WINDOW);
    if cache.len() >= CACHE_ENTRIES / 2 {
        let mut ages: Vec<Instant> = cache.values().map(&at).collect();
        let (_, median, _) = ages.select_nth_unstable(cache.len() / 2);
        let median = *median;
        cache.retain(|_, v| at(v) > median);
    }
}

/// One correlator per process, as upstream has one broadcaster per component;
/// the keys carry the component.
static CORRELATOR: LazyLock<Mutex<Correlator>> = LazyLock::new(Mutex::default);

/// A reference to `obj` (upstream's GetReference): what an event is about,
/// or what a claimRef points at.
pub fn reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    let m = obj.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        ..Default::default()
    }
}

/// Records an event about `about` from `component`; failures are logged, never fatal.
pub async fn record(client: &Client, component: &str, about: ObjectReference, type_: &str, reason: &str, message: String) {
    emit(client, Report { component, instance: component, host: None, about, type_, reason, action: None, message }).await
}

/// Records a report, creating, bumping or dropping it as the correlator decides.
pub async fn emit(client: &Client, r: Report<'_>) {
    let Some(mut write) = CORRELATOR.lock().unwrap().decide(&r, Instant::now()) else { return };
    let ns = r.about.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into());
    let api = Api::<Event>::namespaced(client.clone(), &ns);
    let mut first = Some(r);
    loop {
        let now = Time(Utc::now());
        let (key, result) = match write {
            Write::Bump { key, name, count, message } => {
                let patch = json!({ "count": count, "lastTimestamp": now, "message": message });
                (key, api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await.map(drop))
            }
            Write::Create { key, name, message } => {
                let r = first.take().expect("an event is created only by its first report");
                (key, api.create(&PostParams::default(), &new_event(r, name, ns.clone(), message, now)).await.map(drop))
            }
        };
        if let Err(e) = result {
            tracing::debug!("recording event: {e}");
        }
        match CORRELATOR.lock().unwrap().done(&key) {
            Some(next) => write = next,
            None => return,
        }
    }
}

fn new_event(r: Report, name: String, namespace: String, message: String, now: Time) -> Event {
    Event {
        metadata: ObjectMeta { name: Some(name), namespace: Some(namespace), ..Default::default() },
        involved_object: r.about,
        reason: Some(r.reason.into()),
        message: Some(message),
        type_: Some(r.type_.into()),
        action: r.action.map(String::from),
        source: Some(EventSource { component: Some(r.component.into()), host: r.host.map(String::from) }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        reporting_component: Some(r.component.into()),
        reporting_instance: Some(r.instance.into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(object: &str, reason: &'static str, message: &str) -> Report<'static> {
        let about = ObjectReference { kind: Some("ReplicaSet".into()), namespace: Some("ns".into()), name: Some(object.into()), uid: Some(format!("uid-{object}")), ..Default::default() };
        Report { component: "replicaset-controller", instance: "replicaset-controller", host: None, about, type_: "Normal", reason, action: None, message: message.into() }
    }

    fn created(w: Option<Write>) -> Option<String> {
        match w {
            Some(Write::Create { message, .. }) => Some(message),
            _ => None,
        }
    }

    /// Decides, and finishes the write at once.
    fn write(c: &mut Correlator, r: Report, now: Instant) -> Option<Write> {
        let w = c.decide(&r, now)?;
        let (Write::Create { key, .. } | Write::Bump { key, .. }) = &w;
        assert_eq!(c.done(key), None);
        Some(w)
    }

    #[test]
    fn a_repeat_bumps_the_count_of_the_event_written() {
        let (mut c, now) = (Correlator::default(), Instant::now());
        let Some(Write::Create { name, key, .. }) = write(&mut c, report("web", "FailedCreate", "quota"), now) else { panic!("first is created") };
        let bump = |count| Some(Write::Bump { key: key.clone(), name: name.clone(), count, message: "quota".into() });
        assert_eq!(write(&mut c, report("web", "FailedCreate", "quota"), now), bump(2));
        // Repeats during a write go out, in order, when it is done.
        assert_eq!(c.decide(&report("web", "FailedCreate", "quota"), now), bump(3));
        assert_eq!(c.decide(&report("web", "FailedCreate", "quota"), now), None);
        assert_eq!(c.decide(&report("web", "FailedCreate", "quota"), now), None);
        assert_eq!(c.done(&key), bump(5));
        assert_eq!(c.done(&key), None);
        // Another object, or another reason, is another event.
        assert!(created(write(&mut c, report("db", "FailedCreate", "quota"), now)).is_some());
        assert!(created(write(&mut c, report("web", "FailedDelete", "quota"), now)).is_some());
    }

    #[test]
    fn similar_events_combine_from_the_tenth() {
        let (mut c, now) = (Correlator::default(), Instant::now());
        for i in 0..9 {
            assert_eq!(created(write(&mut c, report("web", "SuccessfulCreate", &format!("Created pod: web-{i}")), now)).as_deref(), Some(format!("Created pod: web-{i}").as_str()));
        }
        let combined = created(write(&mut c, report("web", "SuccessfulCreate", "Created pod: web-9"), now));
        assert_eq!(combined.as_deref(), Some("(combined from similar events): Created pod: web-9"));
        assert!(matches!(write(&mut c, report("web", "SuccessfulCreate", "Created pod: web-10"), now), Some(Write::Bump { count: 2, .. })));
        // Past the window, messages count afresh.
        let later = now + SIMILAR_WINDOW + Duration::from_secs(1);
        assert_eq!(created(write(&mut c, report("web", "SuccessfulCreate", "Created pod: web-11"), later)).as_deref(), Some("Created pod: web-11"));
    }

    #[test]
    fn an_object_writes_25_at_once_then_one_per_five_minutes() {
        let (mut c, now) = (Correlator::default(), Instant::now());
        let writes = (0..100).filter(|i| write(&mut c, report("web", "SuccessfulCreate", &format!("Created pod: web-{i}")), now).is_some()).count();
        assert_eq!(writes, 25);
        assert!(write(&mut c, report("other", "SuccessfulCreate", "Created pod: other-0"), now).is_some(), "buckets are per object");
        assert!(write(&mut c, report("web", "SuccessfulCreate", "x"), now + Duration::from_secs(100)).is_none());
        assert!(write(&mut c, report("web", "SuccessfulCreate", "x"), now + REFILL_EVERY).is_some());
    }

    #[test]
    fn the_caches_stay_bounded_when_every_event_is_about_a_new_object() {
        let (mut c, start) = (Correlator::default(), Instant::now());
        for i in 0..3 * CACHE_ENTRIES {
            let now = start + Duration::from_millis(i as u64);
            assert!(write(&mut c, report(&format!("pod-{i}"), "Scheduled", "assigned"), now).is_some());
        }
        for len in [c.written.len(), c.similar.len(), c.buckets.len()] {
            assert!((CACHE_ENTRIES / 4..=CACHE_ENTRIES).contains(&len), "{len}");
        }
        // The newest entries are the ones kept.
        let last = format!("pod-{}", 3 * CACHE_ENTRIES - 1);
        assert!(matches!(c.decide(&report(&last, "Scheduled", "assigned"), start + Duration::from_secs(60)), Some(Write::Bump { count: 2, .. })));
    }
}
