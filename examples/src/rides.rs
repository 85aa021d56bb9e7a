//! The `ride-stats` job: a synthetic ride-service stream aggregated per zone
//! and per hour over application windows, written exactly once per window.
//!
//! ```text
//! rides (RideSource) ──▶ stats (RideStats) ──▶ output (ExactlyOnceFileSink<String>)
//! ```
//!
//! - [`RideSource`] is an idempotent input by construction: ride `i` is a
//!   pure function of the seed and `i` ([`ride`]), its state is its
//!   position, and it emits a fixed number of rides per call
//!   ([`RIDES_PER_CALL`]), so a replayed window emits exactly the same rides.
//! - [`RideStats`] aggregates every application window (rides, revenue and
//!   distance per pickup zone and per simulated hour, the top zones by
//!   revenue) and keeps running totals since the job started; at the end of
//!   the application window it emits its report as sorted lines
//!   ([`OUTPUT_FORMAT`] describes them).
//! - The output is `checkpoint_runtime::io::ExactlyOnceFileSink`: each
//!   streaming window's lines are published as `<output>/<16 hex window id>`
//!   once the window is committed, so the published output after failures,
//!   kills and restarts is the failure-free output byte for byte (in the
//!   deterministic window mode, where windows replay identically).
//!
//! # Examples
//!
//! ```
//! use checkpoint_core::MemoryStorageAgent;
//! use checkpoint_examples::rides::{self, JobSettings};
//! use checkpoint_runtime::{Config, Runtime, WindowMode};
//!
//! let out = tempfile::tempdir()?;
//! let settings = JobSettings::new(2_000, out.path());
//! let report = Runtime::new(
//!     Config::default()
//!         .storage(MemoryStorageAgent::new())
//!         .window_mode(WindowMode::Tuples(500)),
//! )
//! .run(rides::dag(&settings))?;
//! assert_eq!(report.operator(rides::STATS).map(|o| o.tuples_in), Some(2_000));
//! let text = String::from_utf8(checkpoint_runtime::io::read_output(out.path())?)?;
//! assert!(text.starts_with("window=1 summary rides=1500 "), "{text}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use checkpoint_core::{Checkpoint, Snapshot, StorageAgent, WindowId};
use checkpoint_runtime::io::ExactlyOnceFileSink;
use checkpoint_runtime::{
    Dag, Emit, InputOperator, JobManifest, Operator, OperatorResult, Output, RestorePoint, plan_from_storage,
};
use serde::{Deserialize, Serialize};

/// The input operator's name (its checkpoints are stored under it).
pub const RIDES: &str = "rides";
/// The aggregating operator's name (the one `--fail-at-window` fails).
pub const STATS: &str = "stats";
/// The exactly-once file sink's name.
pub const OUTPUT: &str = "output";

/// Rides [`RideSource`] emits per `emit_tuples` call (fewer only in the
/// stream's last call). A deterministic window of N rides therefore holds N
/// rounded up to a multiple of this.
pub const RIDES_PER_CALL: u64 = 100;

/// Rides in one simulated day; ride `i` happens on day `i / RIDES_PER_DAY`.
pub const RIDES_PER_DAY: u64 = 40_000;

/// One zone of the simulated city.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zone {
    /// Its name, as written in the output (no spaces).
    pub name: &'static str,
    /// Relative share of pickups and drop-offs (a few busy zones, a long
    /// tail of quiet ones).
    pub weight: u64,
    /// Centre, east-west, in units of 100 m.
    pub x: i64,
    /// Centre, north-south, in units of 100 m.
    pub y: i64,
    /// Offices: commuters go there in the morning rush hour and leave it in
    /// the evening one.
    pub business: bool,
}

const fn zone(name: &'static str, weight: u64, x: i64, y: i64, business: bool) -> Zone {
    Zone {
        name,
        weight,
        x,
        y,
        business,
    }
}

/// The zones, sorted by name (the order of the output's zone lines); a
/// ride's zone is an index into this table.
pub const ZONES: [Zone; 20] = [
    zone("airport", 45, 120, -70, false),
    zone("central-station", 85, 5, -10, true),
    zone("chinatown", 30, -15, 5, false),
    zone("downtown", 180, 0, 0, true),
    zone("east-village", 25, 35, 10, false),
    zone("financial-district", 110, -5, -20, true),
    zone("harbor", 35, -40, -35, false),
    zone("hospital", 20, 25, 40, false),
    zone("industrial-park", 8, 90, -60, false),
    zone("lakeside", 12, -70, 60, false),
    zone("market", 28, 15, -25, false),
    zone("midtown", 150, 10, 25, true),
    zone("north-hills", 10, 5, 110, false),
    zone("old-town", 40, -25, -5, false),
    zone("riverside", 18, -50, 20, false),
    zone("south-docks", 6, -20, -100, false),
    zone("stadium", 22, 60, -20, false),
    zone("suburbs-west", 9, -120, 10, false),
    zone("tech-park", 45, 55, 45, true),
    zone("university", 50, -30, 45, false),
];

const ZONE_TOTAL: u64 = {
    let mut total = 0;
    let mut i = 0;
    while i < ZONES.len() {
        total += ZONES[i].weight;
        i += 1;
    }
    total
};

const BUSINESS_TOTAL: u64 = {
    let mut total = 0;
    let mut i = 0;
    while i < ZONES.len() {
        if ZONES[i].business {
            total += ZONES[i].weight;
        }
        i += 1;
    }
    total
};

/// Relative number of rides per hour of the day: quiet nights, a morning
/// rush hour around 8:00 and an evening one around 18:00.
pub const HOUR_WEIGHTS: [u64; 24] = [
    12, 8, 6, 5, 6, 12, 30, 70, 90, 60, 40, 40, 45, 42, 40, 45, 60, 85, 95, 70, 50, 40, 30, 20,
];

const HOUR_TOTAL: u64 = {
    let mut total = 0;
    let mut i = 0;
    while i < 24 {
        total += HOUR_WEIGHTS[i];
        i += 1;
    }
    total
};

/// Whether rides at this hour of the day pay the rush-hour surcharge.
pub fn is_rush_hour(hour_of_day: u64) -> bool {
    matches!(hour_of_day, 7..=9 | 16..=19)
}

/// One ride.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ride {
    /// Its position in the stream, from 0.
    pub id: u64,
    /// Where it started: an index into [`ZONES`].
    pub pickup_zone: u8,
    /// Where it ended: an index into [`ZONES`].
    pub dropoff_zone: u8,
    /// When it started, in seconds since the simulation's first midnight.
    pub pickup_time: u32,
    /// How long it took, in seconds.
    pub duration_s: u32,
    /// How far it went, in metres.
    pub distance_m: u32,
    /// What it cost, in cents.
    pub fare_cents: u32,
}

impl Ride {
    /// The simulated hour it started in, counted from the first midnight
    /// (`hour / 24` is the day, `hour % 24` the hour of the day).
    pub fn hour(&self) -> u32 {
        self.pickup_time / 3_600
    }
}

/// The splitmix64 mixing function (DESIGN.md's benchmark workload uses the
/// same): a bijection of `u64` whose outputs look random.
///
/// # Examples
///
/// ```
/// assert_eq!(checkpoint_examples::rides::splitmix64(0), 0xE220_A839_7B1D_CDAF);
/// ```
pub fn splitmix64(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Random draws one ride uses; draw `j` of ride `i` mixes `i * DRAWS + j`.
const DRAWS: u64 = 8;

/// Picks an index of [`ZONES`] with probability proportional to its weight,
/// among business zones only if `business`.
fn pick_zone(r: u64, business: bool) -> u8 {
    let total = if business { BUSINESS_TOTAL } else { ZONE_TOTAL };
    let mut target = r % total;
    for (i, zone) in ZONES.iter().enumerate() {
        if business && !zone.business {
            continue;
        }
        if target < zone.weight {
            return i as u8;
        }
        target -= zone.weight;
    }
    // Unreachable: the weights sum to `total`.
    0
}

/// Ride `i` of the stream seeded with `seed`: a pure function, so a replay
/// (after a failure, a kill or a restart) emits exactly the same rides.
///
/// Rides are in time order: ride `i` happens on day `i / RIDES_PER_DAY`, at
/// an hour drawn from [`HOUR_WEIGHTS`] (more rides per hour in the rush
/// hours). Zones follow [`ZONES`]' weights, except that in the morning rush
/// hour many rides go to business zones and in the evening one many leave
/// them. Distance follows the zones' positions; fares are a base fare plus
/// distance and time, with a 25% rush-hour surcharge and a flat airport fee.
///
/// # Examples
///
/// ```
/// use checkpoint_examples::rides::{RIDES_PER_DAY, ride};
///
/// assert_eq!(ride(7, 12_345), ride(7, 12_345));
/// assert_ne!(ride(7, 12_345), ride(8, 12_345));
/// // In time order, one simulated day per RIDES_PER_DAY rides.
/// assert!(ride(7, 100).pickup_time <= ride(7, 101).pickup_time);
/// assert_eq!(ride(7, RIDES_PER_DAY).hour(), 24);
/// ```
pub fn ride(seed: u64, i: u64) -> Ride {
    let key = splitmix64(seed);
    let draw = |j: u64| splitmix64(key ^ i.wrapping_mul(DRAWS).wrapping_add(j));

    // When: position within the day, spread over the hours by weight.
    let day = i / RIDES_PER_DAY;
    let scaled = (i % RIDES_PER_DAY) * HOUR_TOTAL;
    let mut hour = 0;
    let mut before = 0;
    while hour < 23 && (before + HOUR_WEIGHTS[hour]) * RIDES_PER_DAY <= scaled {
        before += HOUR_WEIGHTS[hour];
        hour += 1;
    }
    let within = (scaled - before * RIDES_PER_DAY) * 3_600 / (HOUR_WEIGHTS[hour] * RIDES_PER_DAY);
    let pickup_time = day * 86_400 + hour as u64 * 3_600 + within;
    let hour_of_day = hour as u64;

    // Where: commuters in the rush hours, the zones' weights otherwise.
    let morning = (7..=9).contains(&hour_of_day);
    let evening = (16..=19).contains(&hour_of_day);
    let pickup = pick_zone(draw(1), evening && draw(0) % 100 < 45);
    let dropoff = pick_zone(draw(3), morning && draw(2) % 100 < 45);

    // How far: between the zones' centres (streets are not straight), plus
    // getting around inside the zones.
    let (a, b) = (ZONES[pickup as usize], ZONES[dropoff as usize]);
    let between = ((a.x - b.x).unsigned_abs() + (a.y - b.y).unsigned_abs()) * 6 / 10;
    let distance_m = (between + 4 + draw(4) % 26) * 100 + draw(5) % 100;

    // How long: slower in the rush hours.
    let kmh = if is_rush_hour(hour_of_day) { 16 } else { 28 };
    let duration_s = 60 + distance_m * 3_600 / (kmh * 1_000) * (100 + draw(6) % 40) / 100;

    // What it costs.
    let mut fare = 300 + distance_m * 150 / 1_000 + duration_s * 35 / 60;
    if is_rush_hour(hour_of_day) {
        fare = fare * 5 / 4;
    }
    if a.name == "airport" || b.name == "airport" {
        fare += 500;
    }

    Ride {
        id: i,
        pickup_zone: pickup,
        dropoff_zone: dropoff,
        pickup_time: u32::try_from(pickup_time).unwrap_or(u32::MAX),
        duration_s: u32::try_from(duration_s).unwrap_or(u32::MAX),
        distance_m: u32::try_from(distance_m).unwrap_or(u32::MAX),
        fare_cents: u32::try_from(fare).unwrap_or(u32::MAX),
    }
}

/// Paces a source to at most `rate` items per second (0: no limit). Not
/// state: a source keeps it in a transient field, so it restarts after a
/// restore and a resumed job keeps its rate from then on.
///
/// # Examples
///
/// ```
/// use checkpoint_examples::rides::Pacer;
///
/// let mut pacer = Pacer::default();
/// assert!(!pacer.must_wait(0)); // no limit
/// pacer.emitted(1_000_000);
/// assert!(pacer.must_wait(10)); // far ahead of 10 per second
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Pacer {
    started: Option<Instant>,
    emitted: u64,
}

impl Pacer {
    /// Whether a source emitting at most `rate` per second must wait before
    /// emitting more (its clock starts at the first call).
    pub fn must_wait(&mut self, rate: u64) -> bool {
        if rate == 0 {
            return false;
        }
        let started = *self.started.get_or_insert_with(Instant::now);
        let allowed = started.elapsed().as_micros() * u128::from(rate) / 1_000_000;
        u128::from(self.emitted) > allowed
    }

    /// Counts `n` emitted items.
    pub fn emitted(&mut self, n: u64) {
        self.emitted += n;
    }
}

/// The ride stream as an input operator: rides `next..end` of the stream
/// seeded with `seed`, [`RIDES_PER_CALL`] per call, at most `rate` per
/// second (0: as fast as it can).
///
/// Idempotent by construction: its state is its position and the stream it
/// reads (seed and length, which a resumed job keeps, so it computes what
/// an uninterrupted one would), ride `i` is [`ride`]`(seed, i)`, and every call emits a fixed number of
/// rides, so after a restore the windows that follow are the same as the
/// first time (in the deterministic window mode; time-based windows cut
/// wherever the clock says).
///
/// # Examples
///
/// ```
/// use checkpoint_examples::rides::RideSource;
///
/// let source = RideSource::new(42, 1_000, 0);
/// assert_eq!((source.position(), source.end()), (0, 1_000));
/// ```
#[derive(Debug, Clone, Checkpoint, Serialize)]
pub struct RideSource {
    seed: u64,
    next: u64,
    end: u64,
    /// Configuration: pacing changes no output, so a resumed or recovered
    /// source runs at the rate given to this run.
    #[checkpoint(config)]
    #[serde(skip)]
    rate: u64,
    /// Where the pacing started: re-created on the first call after a
    /// restore, so a resumed job keeps its rate from then on.
    #[checkpoint(transient)]
    #[serde(skip)]
    pacer: Pacer,
}

impl RideSource {
    /// The first `rides` rides of the stream seeded with `seed`, at most
    /// `rate` per second (0: no limit).
    pub fn new(seed: u64, rides: u64, rate: u64) -> Self {
        RideSource {
            seed,
            next: 0,
            end: rides,
            rate,
            pacer: Pacer::default(),
        }
    }

    /// The seed of the stream.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The id of the next ride to emit: how many were emitted before.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The number of rides in the stream.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Rides per second, 0 for no limit.
    pub fn rate(&self) -> u64 {
        self.rate
    }
}

impl InputOperator for RideSource {
    type Output = Ride;

    fn emit_tuples(&mut self, out: Output<'_, Ride>) -> OperatorResult<Emit> {
        if self.next >= self.end {
            return Ok(Emit::Done);
        }
        if self.pacer.must_wait(self.rate) {
            return Ok(Emit::Idle);
        }
        let stop = self.end.min(self.next + RIDES_PER_CALL);
        for i in self.next..stop {
            out.emit(ride(self.seed, i));
        }
        self.pacer.emitted(stop - self.next);
        self.next = stop;
        // `Done` with the last rides, so the stream ends in their window
        // instead of an empty one after it.
        Ok(if self.next == self.end {
            Emit::Done
        } else {
            Emit::Continue
        })
    }
}

/// Rides, revenue and distance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Rides counted.
    pub rides: u64,
    /// Sum of their fares, in cents.
    pub revenue_cents: u64,
    /// Sum of their distances, in metres.
    pub distance_m: u64,
}

impl Totals {
    fn add(&mut self, ride: &Ride) {
        self.rides += 1;
        self.revenue_cents += u64::from(ride.fare_cents);
        self.distance_m += u64::from(ride.distance_m);
    }
}

/// One zone's share of an application window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneWindow {
    /// Rides picked up there (their fares are the zone's revenue).
    pub pickups: Totals,
    /// Rides that ended there.
    pub dropoffs: u64,
}

/// What one application window has seen so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowAggregates {
    /// The sequence number of the application window's first streaming
    /// window.
    pub window: u32,
    /// Every ride of the window.
    pub all: Totals,
    /// Per pickup or drop-off zone (index into [`ZONES`]).
    pub zones: BTreeMap<u8, ZoneWindow>,
    /// Per simulated hour ([`Ride::hour`]).
    pub hours: BTreeMap<u32, Totals>,
}

/// The aggregating operator: per application window, totals per zone and
/// per simulated hour and the top zones by revenue; since the job started,
/// running totals overall and per zone.
///
/// At the end of every application window that saw rides it emits the
/// window's report, in the format of [`OUTPUT_FORMAT`]: one summary line,
/// then the top zones by revenue, then one line per zone (sorted by name)
/// and per hour (ascending), so replays emit the same bytes.
///
/// # Examples
///
/// ```
/// use checkpoint_core::{Snapshot, SnapshotMeta, WindowId};
/// use checkpoint_examples::rides::RideStats;
///
/// let stats = RideStats::new(3);
/// let window = WindowId::new(1_700_000_000, 7);
/// let bytes = Snapshot::encode(&stats, SnapshotMeta::new("stats", window))?;
/// let (header, restored) = Snapshot::decode::<RideStats>(&bytes)?;
/// assert_eq!((header.type_name.as_str(), restored.totals().rides), ("RideStats", 0));
/// # Ok::<(), checkpoint_core::SnapshotError>(())
/// ```
#[derive(Debug, Clone, Checkpoint, Serialize)]
pub struct RideStats {
    /// How many zones each window's revenue ranking lists.
    top: u32,
    /// Every ride since the job started.
    totals: Totals,
    /// Revenue per pickup zone since the job started.
    zone_revenue: BTreeMap<u8, u64>,
    /// The application window being aggregated (empty at every checkpoint,
    /// since checkpoints fall on application window boundaries).
    current: WindowAggregates,
    /// Scratch space for the ranking, reused across windows: not state.
    #[checkpoint(transient)]
    #[serde(skip)]
    ranking: Vec<(u64, u8)>,
}

impl RideStats {
    /// A fresh operator listing the `top` zones by revenue per window.
    pub fn new(top: u32) -> Self {
        RideStats {
            top,
            totals: Totals::default(),
            zone_revenue: BTreeMap::new(),
            current: WindowAggregates::default(),
            ranking: Vec::new(),
        }
    }

    /// Every ride counted since the job started.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// How many zones each window's ranking lists.
    pub fn top(&self) -> u32 {
        self.top
    }

    /// The report of the current application window, as output lines.
    fn report(&mut self) -> Vec<String> {
        let w = &self.current;
        let mut lines = Vec::with_capacity(1 + self.top as usize + w.zones.len() + w.hours.len());
        lines.push(format!(
            "window={} summary rides={} revenue={} km={} total-rides={} total-revenue={}",
            w.window,
            w.all.rides,
            money(w.all.revenue_cents),
            km(w.all.distance_m),
            self.totals.rides,
            money(self.totals.revenue_cents),
        ));
        self.ranking.clear();
        self.ranking.extend(
            w.zones
                .iter()
                .filter(|(_, z)| z.pickups.rides > 0)
                .map(|(zone, z)| (z.pickups.revenue_cents, *zone)),
        );
        // Revenue descending; zones are sorted by name, so ties go by name.
        self.ranking.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (rank, (revenue, zone)) in self.ranking.iter().take(self.top as usize).enumerate() {
            let rides = w.zones.get(zone).map_or(0, |z| z.pickups.rides);
            lines.push(format!(
                "window={} top={} zone={} revenue={} pickups={}",
                w.window,
                rank + 1,
                zone_name(*zone),
                money(*revenue),
                rides,
            ));
        }
        for (zone, z) in &w.zones {
            lines.push(format!(
                "window={} zone={} pickups={} dropoffs={} revenue={} avg-fare={} avg-km={} total-revenue={}",
                w.window,
                zone_name(*zone),
                z.pickups.rides,
                z.dropoffs,
                money(z.pickups.revenue_cents),
                money(average(z.pickups.revenue_cents, z.pickups.rides)),
                km2(average(z.pickups.distance_m, z.pickups.rides)),
                money(self.zone_revenue.get(zone).copied().unwrap_or(0)),
            ));
        }
        for (hour, h) in &w.hours {
            lines.push(format!(
                "window={} hour={} rides={} revenue={} avg-fare={} avg-km={}",
                w.window,
                hour_label(*hour),
                h.rides,
                money(h.revenue_cents),
                money(average(h.revenue_cents, h.rides)),
                km2(average(h.distance_m, h.rides)),
            ));
        }
        lines
    }
}

impl Operator for RideStats {
    type Input = Ride;
    type Output = String;

    fn begin_window(&mut self, window: WindowId) -> OperatorResult {
        self.current = WindowAggregates {
            window: window.sequence(),
            ..WindowAggregates::default()
        };
        Ok(())
    }

    fn process(&mut self, ride: Ride, _out: Output<'_, String>) -> OperatorResult {
        let w = &mut self.current;
        w.all.add(&ride);
        w.zones.entry(ride.pickup_zone).or_default().pickups.add(&ride);
        w.zones.entry(ride.dropoff_zone).or_default().dropoffs += 1;
        w.hours.entry(ride.hour()).or_default().add(&ride);
        self.totals.add(&ride);
        *self.zone_revenue.entry(ride.pickup_zone).or_default() += u64::from(ride.fare_cents);
        Ok(())
    }

    fn end_window(&mut self, out: Output<'_, String>) -> OperatorResult {
        if self.current.all.rides > 0 {
            for line in self.report() {
                out.emit(line);
            }
        }
        self.current = WindowAggregates::default();
        Ok(())
    }
}

/// What each line of the output means; `ride-stats` writes it to
/// `README.txt` in the output directory.
pub const OUTPUT_FORMAT: &str = "\
ride-stats output: one file per streaming window, named by its window id (16 hex
digits: base seconds, then the sequence number), published once the window is
committed. Concatenated in name order they are the job's report; each
application window that saw rides contributes, in this order:

window=W summary rides=N revenue=R km=D total-rides=N total-revenue=R
    W: sequence number of the application window's first streaming window;
    its rides, revenue (sum of fares) and distance; total-*: since the job started
window=W top=K zone=Z revenue=R pickups=N
    the K-th zone by revenue of rides picked up there in this window
window=W zone=Z pickups=N dropoffs=N revenue=R avg-fare=R avg-km=D total-revenue=R
    per zone with a pickup or a drop-off in the window, sorted by zone name
window=W hour=dayD-HHh rides=N revenue=R avg-fare=R avg-km=D
    per simulated hour of pickup (day 1 is the first simulated day)

Money is in dollars (from whole cents, averages rounded down); distances in km.
";

/// A zone's name, `zone-<n>` for an index outside [`ZONES`].
pub fn zone_name(zone: u8) -> String {
    ZONES
        .get(zone as usize)
        .map_or_else(|| format!("zone-{zone}"), |z| z.name.to_owned())
}

/// A simulated hour as the output writes it: `day1-08h`.
pub fn hour_label(hour: u32) -> String {
    format!("day{}-{:02}h", hour / 24 + 1, hour % 24)
}

/// Cents as dollars: `12345` -> `123.45`.
pub fn money(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// Metres as km with one decimal, rounded down: `12345` -> `12.3`.
fn km(meters: u64) -> String {
    format!("{}.{}", meters / 1_000, meters % 1_000 / 100)
}

/// Metres as km with two decimals, rounded down: `12345` -> `12.34`.
fn km2(meters: u64) -> String {
    format!("{}.{:02}", meters / 1_000, meters % 1_000 / 10)
}

fn average(sum: u64, count: u64) -> u64 {
    sum.checked_div(count).unwrap_or(0)
}

/// The settings of a `ride-stats` job. A job resumed from its checkpoints
/// keeps the settings its operators were created with (they are part of
/// their state); only a new job takes these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSettings {
    /// Rides in the stream.
    pub rides: u64,
    /// The stream's seed.
    pub seed: u64,
    /// Rides per second, 0 for no limit.
    pub rate: u64,
    /// Zones in each window's revenue ranking.
    pub top: u32,
    /// Where the output is published.
    pub output: PathBuf,
    /// Streaming windows per application window of `stats`.
    pub application_windows: u32,
    /// Streaming windows between checkpoints (a multiple of
    /// `application_windows`).
    pub checkpoint_every: u32,
}

impl JobSettings {
    /// `rides` rides with seed 42, no rate limit, the top 3 zones,
    /// application windows of 4 streaming windows, a checkpoint every 4.
    pub fn new(rides: u64, output: impl Into<PathBuf>) -> Self {
        JobSettings {
            rides,
            seed: 42,
            rate: 0,
            top: 3,
            output: output.into(),
            application_windows: 4,
            checkpoint_every: 4,
        }
    }
}

/// The job's DAG: `rides -> stats -> output`.
pub fn dag(settings: &JobSettings) -> Dag {
    let mut dag = Dag::new();
    let rides = dag.input(RIDES, RideSource::new(settings.seed, settings.rides, settings.rate));
    let stats = dag.operator(STATS, RideStats::new(settings.top));
    let output = dag.operator(OUTPUT, ExactlyOnceFileSink::<String>::new(&settings.output));
    dag.connect(&rides, &stats).connect(&stats, &output);
    dag.application_window_count(&stats, settings.application_windows)
        .default_checkpoint_window_count(settings.checkpoint_every);
    dag
}

/// A `ride-stats` job found in a checkpoint directory: where it would
/// resume and with which settings.
#[derive(Debug, Clone)]
pub struct StoredJob {
    /// The checkpoint the input would be restored from.
    pub window: WindowId,
    /// The input's state there: position and settings of the stream.
    pub source: RideSource,
}

/// Reads the `ride-stats` job stored in `storage`, if any, the way the
/// runtime will resume it (recovery checkpoints as the coordinator computes
/// them, skipping snapshots that do not verify). For display and for
/// warnings about settings that a resumed job does not take; the runtime
/// decides on its own.
///
/// `None` if the storage holds no job manifest (a new job).
///
/// # Errors
///
/// A storage error, or a message if the storage holds another job, an
/// unreadable manifest or no usable checkpoint of the input.
pub fn stored_job(storage: &dyn StorageAgent) -> Result<Option<StoredJob>, String> {
    let Some(manifest) = storage.load_manifest().map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let manifest = JobManifest::from_bytes(&manifest).map_err(|e| format!("its job manifest is unreadable: {e}"))?;
    let names = [RIDES, STATS, OUTPUT];
    let stored: Vec<&str> = manifest.operators.iter().map(|o| o.name.as_str()).collect();
    if stored != names {
        return Err(format!(
            "it holds another job, with operators [{}] instead of [{}]",
            stored.join(", "),
            names.join(", ")
        ));
    }
    // The runtime's own plan: what a restart will do.
    let plan = plan_from_storage(storage, &manifest).map_err(|e| e.to_string())?;
    if let Some(problem) = plan.problem() {
        return Err(problem);
    }
    let restore = |name: &str| plan.operator(name).and_then(|o| o.restore);
    let window = match restore(RIDES) {
        Some(RestorePoint::Checkpoint(w)) => w,
        // Restarts as new: its state is the one given on the command line.
        _ => return Ok(None),
    };
    let bytes = storage.load(RIDES, window).map_err(|e| e.to_string())?;
    let (_, source) = Snapshot::decode::<RideSource>(&bytes).map_err(|e| e.to_string())?;
    Ok(Some(StoredJob { window, source }))
}

/// Whether `dir` holds published output windows (of an earlier job).
///
/// # Errors
///
/// An I/O error reading the directory (a missing one has none).
pub fn has_output(dir: &Path) -> std::io::Result<bool> {
    Ok(!checkpoint_runtime::io::published_windows(dir)?.is_empty())
}

/// Formats a count with thousands separators: `1234567` -> `1,234,567`.
///
/// # Examples
///
/// ```
/// assert_eq!(checkpoint_examples::rides::thousands(1_234_567), "1,234,567");
/// assert_eq!(checkpoint_examples::rides::thousands(12), "12");
/// ```
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_follow_the_rush_hour_profile() {
        let mut per_hour = [0u64; 24];
        for i in 0..RIDES_PER_DAY {
            let r = ride(1, i);
            assert_eq!(r.hour() / 24, 0);
            per_hour[(r.hour() % 24) as usize] += 1;
        }
        // Proportional to the weights, within rounding.
        for (h, n) in per_hour.iter().enumerate() {
            let expected = HOUR_WEIGHTS[h] * RIDES_PER_DAY / HOUR_TOTAL;
            assert!(n.abs_diff(expected) <= 1, "hour {h}: {n} vs {expected}");
        }
        assert!(per_hour[8] > 10 * per_hour[3]);
    }

    #[test]
    fn zones_are_skewed_and_commuters_go_downtown_in_the_morning() {
        let mut pickups = [0u64; ZONES.len()];
        let mut morning_business = 0;
        let mut morning = 0;
        for i in 0..RIDES_PER_DAY {
            let r = ride(3, i);
            pickups[r.pickup_zone as usize] += 1;
            if (7..=9).contains(&(r.hour() % 24)) {
                morning += 1;
                morning_business += u64::from(ZONES[r.dropoff_zone as usize].business);
            }
        }
        let downtown = pickups[3];
        assert_eq!(ZONES[3].name, "downtown");
        assert!(downtown > 10 * pickups[15], "{pickups:?}");
        assert!(morning_business * 100 / morning > 60, "{morning_business}/{morning}");
    }

    #[test]
    fn zones_are_sorted_by_name() {
        assert!(ZONES.windows(2).all(|w| w[0].name < w[1].name));
    }

    #[test]
    fn fares_and_distances_are_plausible() {
        for i in 0..10_000 {
            let r = ride(9, i);
            assert!((400..40_000).contains(&r.distance_m), "{r:?}");
            assert!((300..25_000).contains(&r.fare_cents), "{r:?}");
            assert!(r.duration_s >= 60, "{r:?}");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(money(12_345), "123.45");
        assert_eq!(money(5), "0.05");
        assert_eq!(km(12_345), "12.3");
        assert_eq!(km2(12_345), "12.34");
        assert_eq!(hour_label(24 + 8), "day2-08h");
    }
}
