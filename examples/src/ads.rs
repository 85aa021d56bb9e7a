//! The `dimensions` job: real-time dimensional aggregation of a synthetic ad
//! event stream, partitioned by dimension key, written exactly once per
//! window (Apex's dimensions computation, in small).
//!
//! ```text
//! events (EventSource) ─thread-local─▶ expand (Expand) ─by key─▶ aggregate#0..P (Aggregate)
//!     ──▶ merge (Merge, sorts) ──▶ output (ExactlyOnceFileSink<String>)
//! ```
//!
//! - [`EventSource`] is idempotent: event `i` is [`event`]`(seed, i)`, its
//!   state is its position, and it emits [`EVENTS_PER_CALL`] events per
//!   call, so a replayed window emits exactly the same events.
//! - [`Expand`] turns each event into one [`DimTuple`] per dimension
//!   combination of [`COMBINATIONS`] (publisher, advertiser,
//!   publisher×location); they are routed by [`DimKey`], so each partition
//!   of `aggregate` owns a disjoint set of keys.
//! - [`Aggregate`] sums events, impressions, clicks and cost per key over two
//!   time buckets: each application window, and buckets of several
//!   application windows (running totals, updated every application window).
//! - [`SortWindow`](checkpoint_runtime::io::SortWindow) (one partition) sorts each window's lines, so the output does
//!   not depend on how the partitions' batches interleave, and the
//!   exactly-once sink publishes them once the window is committed.
//!
//! [`OUTPUT_FORMAT`] describes the output lines.
//!
//! # Examples
//!
//! ```
//! use checkpoint_core::MemoryStorageAgent;
//! use checkpoint_examples::ads::{self, JobSettings};
//! use checkpoint_runtime::{Config, Runtime, WindowMode};
//!
//! let out = tempfile::tempdir()?;
//! let settings = JobSettings::new(1_000, out.path());
//! Runtime::new(
//!     Config::default()
//!         .storage(MemoryStorageAgent::new())
//!         .window_mode(WindowMode::Tuples(200)),
//! )
//! .run(ads::dag(&settings))?;
//! let text = String::from_utf8(checkpoint_runtime::io::read_output(out.path())?)?;
//! assert!(text.starts_with("window=1 bucket=1-15 "), "{text}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use checkpoint_core::{Checkpoint, Snapshot, StorageAgent, WindowId};
use checkpoint_runtime::io::ExactlyOnceFileSink;
use checkpoint_runtime::{
    Dag, Emit, InputOperator, JobManifest, Operator, OperatorContext, OperatorResult, Output, RestorePoint,
    plan_from_storage,
};
use serde::{Deserialize, Serialize};

use crate::rides::{Pacer, money, splitmix64};

/// The input operator's name.
pub const EVENTS: &str = "events";
/// The stateless operator that expands events into dimension tuples.
pub const EXPAND: &str = "expand";
/// The partitioned aggregator's name (partitions are `aggregate#0`, ...).
pub const AGGREGATE: &str = "aggregate";
/// The single-partition operator that sorts each window's lines.
pub const MERGE: &str = "merge";
/// The exactly-once file sink's name.
pub const OUTPUT: &str = "output";
/// The job's operators, in the order of its DAG.
pub const OPERATORS: [&str; 5] = [EVENTS, EXPAND, AGGREGATE, MERGE, OUTPUT];

/// Events [`EventSource`] emits per call (fewer only in the last call): a
/// deterministic window of N events holds N rounded up to a multiple of it.
pub const EVENTS_PER_CALL: u64 = 100;

/// The publishers (web sites showing the ads), sorted by name, with their
/// relative share of the traffic.
pub const PUBLISHERS: [(&str, u64); 7] = [
    ("daily-news", 40),
    ("game-zone", 4),
    ("recipe-box", 8),
    ("sports-hub", 25),
    ("tech-weekly", 15),
    ("travel-guide", 6),
    ("weather-now", 2),
];

/// One advertiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advertiser {
    /// Its name, as written in the output.
    pub name: &'static str,
    /// Relative share of the ads shown.
    pub weight: u64,
    /// What a click costs it, in cents.
    pub cpc_cents: u64,
    /// Clicks per thousand impressions.
    pub ctr_permille: u64,
}

const fn advertiser(name: &'static str, weight: u64, cpc_cents: u64, ctr_permille: u64) -> Advertiser {
    Advertiser {
        name,
        weight,
        cpc_cents,
        ctr_permille,
    }
}

/// The advertisers, sorted by name.
pub const ADVERTISERS: [Advertiser; 6] = [
    advertiser("acme-shoes", 30, 45, 25),
    advertiser("bright-bank", 20, 120, 12),
    advertiser("cloud-nine-travel", 15, 80, 18),
    advertiser("fresh-foods", 15, 30, 30),
    advertiser("gadget-galaxy", 12, 60, 22),
    advertiser("zen-insurance", 8, 150, 8),
];

/// The viewers' locations, sorted by name, with their relative share.
pub const LOCATIONS: [(&str, u64); 5] = [
    ("ap-south", 15),
    ("eu-central", 20),
    ("eu-west", 15),
    ("us-east", 30),
    ("us-west", 20),
];

/// One ad event: a batch of impressions of one advertiser's ad on one
/// publisher's page, seen from one location, and the clicks they got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdEvent {
    /// Its position in the stream, from 0.
    pub id: u64,
    /// An index into [`PUBLISHERS`].
    pub publisher: u8,
    /// An index into [`ADVERTISERS`].
    pub advertiser: u8,
    /// An index into [`LOCATIONS`].
    pub location: u8,
    /// Times the ad was shown (1 to 20).
    pub impressions: u32,
    /// Clicks on it (at most `impressions`).
    pub clicks: u32,
    /// What the advertiser pays: a cent per impression plus its cost per
    /// click.
    pub cost_cents: u32,
}

/// Random draws one event uses; draw `j` of event `i` mixes `i * DRAWS + j`.
const DRAWS: u64 = 8;

/// An index into `weights` with probability proportional to the weight.
fn pick(r: u64, weights: impl Iterator<Item = u64> + Clone) -> u8 {
    let total: u64 = weights.clone().sum();
    let mut target = r % total.max(1);
    for (i, w) in weights.enumerate() {
        if target < w {
            return i as u8;
        }
        target -= w;
    }
    0
}

/// Event `i` of the stream seeded with `seed`: a pure function, so a replay
/// emits exactly the same events.
///
/// # Examples
///
/// ```
/// use checkpoint_examples::ads::event;
///
/// assert_eq!(event(7, 123), event(7, 123));
/// assert_ne!(event(7, 123), event(8, 123));
/// let e = event(7, 123);
/// assert!(e.clicks <= e.impressions && (1..=20).contains(&e.impressions));
/// ```
pub fn event(seed: u64, i: u64) -> AdEvent {
    let key = splitmix64(seed ^ 0xAD5_D1CE);
    let draw = |j: u64| splitmix64(key ^ i.wrapping_mul(DRAWS).wrapping_add(j));
    let publisher = pick(draw(0), PUBLISHERS.iter().map(|p| p.1));
    let advertiser = pick(draw(1), ADVERTISERS.iter().map(|a| a.weight));
    let location = pick(draw(2), LOCATIONS.iter().map(|l| l.1));
    let impressions = 1 + draw(3) % 20;
    let ad = ADVERTISERS[advertiser as usize];
    let clicks = (0..impressions)
        .filter(|k| splitmix64(draw(4) ^ k) % 1_000 < ad.ctr_permille)
        .count() as u64;
    let cost = impressions + clicks * ad.cpc_cents;
    AdEvent {
        id: i,
        publisher,
        advertiser,
        location,
        impressions: impressions as u32,
        clicks: clicks as u32,
        cost_cents: u32::try_from(cost).unwrap_or(u32::MAX),
    }
}

/// The ad event stream as an input operator: events `next..end` of the
/// stream seeded with `seed`, [`EVENTS_PER_CALL`] per call, at most `rate`
/// per second (0: no limit). Idempotent by construction.
#[derive(Debug, Clone, Checkpoint)]
pub struct EventSource {
    seed: u64,
    next: u64,
    end: u64,
    /// Configuration: pacing changes no output, so a resumed or recovered
    /// source runs at the rate given to this run.
    #[checkpoint(config)]
    rate: u64,
    #[checkpoint(transient)]
    pacer: Pacer,
}

impl EventSource {
    /// The first `events` events of the stream seeded with `seed`.
    pub fn new(seed: u64, events: u64, rate: u64) -> Self {
        EventSource {
            seed,
            next: 0,
            end: events,
            rate,
            pacer: Pacer::default(),
        }
    }

    /// The stream's seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// How many events were emitted before.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The number of events in the stream.
    pub fn end(&self) -> u64 {
        self.end
    }
}

impl InputOperator for EventSource {
    type Output = AdEvent;

    fn emit_tuples(&mut self, out: Output<'_, AdEvent>) -> OperatorResult<Emit> {
        if self.next >= self.end {
            return Ok(Emit::Done);
        }
        if self.pacer.must_wait(self.rate) {
            return Ok(Emit::Idle);
        }
        let stop = self.end.min(self.next + EVENTS_PER_CALL);
        for i in self.next..stop {
            out.emit(event(self.seed, i));
        }
        self.pacer.emitted(stop - self.next);
        self.next = stop;
        Ok(if self.next == self.end {
            Emit::Done
        } else {
            Emit::Continue
        })
    }
}

/// A dimension combination: which dimensions its keys keep (the others are
/// aggregated over, written `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Combination {
    /// Keeps the publisher.
    pub publisher: bool,
    /// Keeps the advertiser.
    pub advertiser: bool,
    /// Keeps the location.
    pub location: bool,
}

/// The combinations aggregated: per publisher, per advertiser, and per
/// publisher and location.
pub const COMBINATIONS: [Combination; 3] = [
    Combination {
        publisher: true,
        advertiser: false,
        location: false,
    },
    Combination {
        publisher: false,
        advertiser: true,
        location: false,
    },
    Combination {
        publisher: true,
        advertiser: false,
        location: true,
    },
];

/// A dimension value aggregated over (`*` in the output).
pub const ANY: u8 = u8::MAX;

/// A dimension key: one value per dimension, or [`ANY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DimKey {
    /// An index into [`PUBLISHERS`], or [`ANY`].
    pub publisher: u8,
    /// An index into [`ADVERTISERS`], or [`ANY`].
    pub advertiser: u8,
    /// An index into [`LOCATIONS`], or [`ANY`].
    pub location: u8,
}

impl DimKey {
    /// The key of `event` in `combination`.
    pub fn of(event: &AdEvent, combination: Combination) -> Self {
        let keep = |keep: bool, value: u8| if keep { value } else { ANY };
        DimKey {
            publisher: keep(combination.publisher, event.publisher),
            advertiser: keep(combination.advertiser, event.advertiser),
            location: keep(combination.location, event.location),
        }
    }

    /// The key as one number, for partitioning.
    pub fn packed(&self) -> u32 {
        u32::from(self.publisher) << 16 | u32::from(self.advertiser) << 8 | u32::from(self.location)
    }

    /// The key as the output writes it:
    /// `publisher=P advertiser=A location=L`, `*` for [`ANY`].
    pub fn label(&self) -> String {
        let name = |value: u8, names: &dyn Fn(usize) -> Option<&'static str>| {
            if value == ANY {
                "*".to_owned()
            } else {
                names(value as usize).map_or_else(|| format!("#{value}"), str::to_owned)
            }
        };
        format!(
            "publisher={} advertiser={} location={}",
            name(self.publisher, &|i| PUBLISHERS.get(i).map(|p| p.0)),
            name(self.advertiser, &|i| ADVERTISERS.get(i).map(|a| a.name)),
            name(self.location, &|i| LOCATIONS.get(i).map(|l| l.0)),
        )
    }
}

/// The measures aggregated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measures {
    /// Events counted.
    pub events: u64,
    /// Their impressions.
    pub impressions: u64,
    /// Their clicks.
    pub clicks: u64,
    /// Their cost, in cents.
    pub cost_cents: u64,
}

impl Measures {
    /// One event's measures.
    pub fn of(event: &AdEvent) -> Self {
        Measures {
            events: 1,
            impressions: u64::from(event.impressions),
            clicks: u64::from(event.clicks),
            cost_cents: u64::from(event.cost_cents),
        }
    }

    /// Adds `other` to these.
    pub fn add(&mut self, other: &Measures) {
        self.events += other.events;
        self.impressions += other.impressions;
        self.clicks += other.clicks;
        self.cost_cents += other.cost_cents;
    }
}

/// One event's contribution to one dimension key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DimTuple {
    /// The key.
    pub key: DimKey,
    /// The event's measures.
    pub measures: Measures,
}

/// Expands each event into one [`DimTuple`] per combination. Stateless.
#[derive(Debug, Default, Checkpoint)]
#[checkpoint(stateless)]
pub struct Expand;

impl Operator for Expand {
    type Input = AdEvent;
    type Output = DimTuple;

    fn process(&mut self, event: AdEvent, out: Output<'_, DimTuple>) -> OperatorResult {
        let measures = Measures::of(&event);
        for combination in COMBINATIONS {
            out.emit(DimTuple {
                key: DimKey::of(&event, combination),
                measures,
            });
        }
        Ok(())
    }
}

/// Aggregates the keys of one partition over each application window and
/// over buckets of `bucket_apps` application windows.
///
/// A bucket spans `bucket_apps × application window count` streaming
/// windows and is aligned like application windows: bucket `b` holds the
/// streaming windows with `sequence / span == b`. At the end of each
/// application window, for every key seen in it, it emits the key's
/// aggregates in the application window and its running totals in the
/// current bucket (see [`OUTPUT_FORMAT`]), in key order.
#[derive(Debug, Clone, Checkpoint)]
pub struct Aggregate {
    /// Application windows per bucket.
    bucket_apps: u32,
    /// The current bucket's number, and its totals so far.
    bucket: Option<u32>,
    totals: BTreeMap<DimKey, Measures>,
    /// The current application window's first streaming window, and its
    /// aggregates (empty at every checkpoint).
    window: u32,
    current: BTreeMap<DimKey, Measures>,
    /// Streaming windows per application window, from the context.
    #[checkpoint(transient, default = "Self::one")]
    app_windows: u32,
}

impl Aggregate {
    /// An empty aggregator with buckets of `bucket_apps` application windows.
    pub fn new(bucket_apps: u32) -> Self {
        Aggregate {
            bucket_apps: bucket_apps.max(1),
            bucket: None,
            totals: BTreeMap::new(),
            window: 0,
            current: BTreeMap::new(),
            app_windows: 1,
        }
    }

    fn one() -> u32 {
        1
    }

    /// Streaming windows per bucket.
    fn span(&self) -> u32 {
        self.bucket_apps.saturating_mul(self.app_windows).max(1)
    }
}

/// The label of bucket `bucket` of `span` streaming windows: its first and
/// last streaming window (sequence numbers start at 1).
pub fn bucket_label(bucket: u32, span: u32) -> String {
    let first = bucket.saturating_mul(span);
    format!("{}-{}", first.max(1), first.saturating_add(span - 1))
}

/// One output line.
pub fn line(window: u32, bucket: &str, key: &DimKey, m: &Measures) -> String {
    format!(
        "window={window} bucket={bucket} {} events={} impressions={} clicks={} cost={}",
        key.label(),
        m.events,
        m.impressions,
        m.clicks,
        money(m.cost_cents)
    )
}

impl Operator for Aggregate {
    type Input = DimTuple;
    type Output = String;

    fn setup(&mut self, ctx: &OperatorContext) -> OperatorResult {
        self.app_windows = ctx.application_window_count().max(1);
        Ok(())
    }

    fn begin_window(&mut self, window: WindowId) -> OperatorResult {
        self.window = window.sequence();
        self.current.clear();
        let bucket = self.window / self.span();
        if self.bucket != Some(bucket) {
            self.bucket = Some(bucket);
            self.totals.clear();
        }
        Ok(())
    }

    fn process(&mut self, tuple: DimTuple, _out: Output<'_, String>) -> OperatorResult {
        self.current.entry(tuple.key).or_default().add(&tuple.measures);
        self.totals.entry(tuple.key).or_default().add(&tuple.measures);
        Ok(())
    }

    fn end_window(&mut self, out: Output<'_, String>) -> OperatorResult {
        let label = bucket_label(self.bucket.unwrap_or(0), self.span());
        for (key, m) in &self.current {
            out.emit(line(self.window, "app", key, m));
            let total = self.totals.get(key).copied().unwrap_or_default();
            out.emit(line(self.window, &label, key, &total));
        }
        self.current.clear();
        Ok(())
    }
}

/// What each output line means; `dimensions` writes it to `README.txt` in
/// the output directory.
pub const OUTPUT_FORMAT: &str = "\
dimensions output: one file per streaming window, named by its window id (16 hex
digits: base seconds, then the sequence number), published once the window is
committed, its lines sorted. At the end of each application window, for every
dimension key with events in it:

window=W bucket=app publisher=P advertiser=A location=L events=N impressions=N clicks=N cost=C
    the key's aggregates in the application window starting at streaming window W
window=W bucket=F-T publisher=P advertiser=A location=L events=N impressions=N clicks=N cost=C
    the key's running totals in the bucket of streaming windows F to T, from its
    start to the end of the application window starting at W (the line with the
    largest W of a bucket and key is its final value)

Keys: per publisher, per advertiser, and per publisher and location; `*` stands
for a dimension aggregated over. Cost is in dollars.
";

/// The settings of a `dimensions` job (a resumed job keeps those in its
/// checkpoints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSettings {
    /// Events in the stream.
    pub events: u64,
    /// The stream's seed.
    pub seed: u64,
    /// Events per second, 0 for no limit.
    pub rate: u64,
    /// Partitions of `aggregate`.
    pub partitions: usize,
    /// Streaming windows per application window of `aggregate` (and
    /// between checkpoints).
    pub application_windows: u32,
    /// Application windows per long bucket.
    pub bucket_apps: u32,
    /// Where the output is published.
    pub output: PathBuf,
}

impl JobSettings {
    /// `events` events with seed 42, no rate limit, 4 partitions,
    /// application windows of 4 streaming windows, buckets of 4 of them.
    pub fn new(events: u64, output: impl Into<PathBuf>) -> Self {
        JobSettings {
            events,
            seed: 42,
            rate: 0,
            partitions: 4,
            application_windows: 4,
            bucket_apps: 4,
            output: output.into(),
        }
    }
}

/// The job's DAG.
pub fn dag(settings: &JobSettings) -> Dag {
    let mut dag = Dag::new();
    let events = dag.input(EVENTS, EventSource::new(settings.seed, settings.events, settings.rate));
    let expand = dag.operator(EXPAND, Expand);
    let bucket_apps = settings.bucket_apps;
    let aggregate = dag.operator_partitioned(AGGREGATE, settings.partitions.max(1), move |_| {
        Aggregate::new(bucket_apps)
    });
    // Lines from every partition, sorted per window: the same order every run.
    let merge = dag.operator(MERGE, checkpoint_runtime::io::SortWindow::<String>::new());
    let output = dag.operator(OUTPUT, ExactlyOnceFileSink::<String>::new(&settings.output));
    dag.connect_thread_local(&events, &expand)
        .connect_by_key(&expand, &aggregate, |t: &DimTuple| t.key.packed())
        .connect(&aggregate, &merge)
        .connect(&merge, &output);
    dag.application_window_count(&aggregate, settings.application_windows)
        .default_checkpoint_window_count(settings.application_windows);
    dag
}

/// A `dimensions` job found in a checkpoint directory, for display (the
/// runtime decides on its own where to resume).
#[derive(Debug, Clone)]
pub struct StoredJob {
    /// Partitions of `aggregate`.
    pub partitions: usize,
    /// Streaming windows per application window.
    pub application_windows: u32,
    /// About where the input resumes (its newest checkpoint that every
    /// other operator's checkpoints cover), and its state there.
    pub source: Option<(WindowId, EventSource)>,
}

/// Reads the `dimensions` job stored in `storage`, if any (`None`: no job
/// manifest, a new job).
///
/// # Errors
///
/// A storage error, or a message if the storage holds another job or an
/// unreadable manifest.
pub fn stored_job(storage: &dyn StorageAgent) -> Result<Option<StoredJob>, String> {
    let Some(manifest) = storage.load_manifest().map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let manifest = JobManifest::from_bytes(&manifest).map_err(|e| format!("its job manifest is unreadable: {e}"))?;
    let stored: Vec<&str> = manifest.operators.iter().map(|o| o.name.as_str()).collect();
    if stored != OPERATORS {
        return Err(format!(
            "it holds another job, with operators [{}] instead of [{}]",
            stored.join(", "),
            OPERATORS.join(", ")
        ));
    }
    let aggregate = &manifest.operators[2];
    // The runtime's own plan: what a restart will do.
    let plan = plan_from_storage(storage, &manifest).map_err(|e| e.to_string())?;
    if let Some(problem) = plan.problem() {
        return Err(problem);
    }
    let checkpoint = |name: &str| match plan.operator(name).and_then(|o| o.restore) {
        Some(RestorePoint::Checkpoint(w)) => Some(w),
        _ => None,
    };
    let source = checkpoint(EVENTS).and_then(|w| {
        let bytes = storage.load(EVENTS, w).ok()?;
        let (_, source) = Snapshot::decode::<EventSource>(&bytes).ok()?;
        Some((w, source))
    });
    Ok(Some(StoredJob {
        source,
        ..job(aggregate.partitions, aggregate.application_window_count)
    }))
}

fn job(partitions: usize, application_windows: u32) -> StoredJob {
    StoredJob {
        partitions,
        application_windows,
        source: None,
    }
}

/// Whether `dir` holds published output windows (of an earlier job).
///
/// # Errors
///
/// An I/O error reading the directory (a missing one has none).
pub fn has_output(dir: &Path) -> std::io::Result<bool> {
    Ok(!checkpoint_runtime::io::published_windows(dir)?.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_by_name() {
        assert!(PUBLISHERS.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(ADVERTISERS.windows(2).all(|w| w[0].name < w[1].name));
        assert!(LOCATIONS.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn events_are_skewed_and_plausible() {
        let mut per_publisher = [0u64; PUBLISHERS.len()];
        let (mut impressions, mut clicks) = (0, 0);
        for i in 0..20_000 {
            let e = event(1, i);
            per_publisher[e.publisher as usize] += 1;
            impressions += u64::from(e.impressions);
            clicks += u64::from(e.clicks);
        }
        assert!(per_publisher[0] > 10 * per_publisher[6], "{per_publisher:?}");
        let ctr = clicks * 1_000 / impressions;
        assert!((8..=30).contains(&ctr), "{ctr}");
    }

    #[test]
    fn labels() {
        let key = DimKey {
            publisher: 0,
            advertiser: ANY,
            location: 4,
        };
        assert_eq!(key.label(), "publisher=daily-news advertiser=* location=us-west");
        assert_eq!(bucket_label(0, 16), "1-15");
        assert_eq!(bucket_label(2, 16), "32-47");
    }
}
