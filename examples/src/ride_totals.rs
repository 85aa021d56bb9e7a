//! The state of the `resume-demo` example: rides and revenue per pickup zone,
//! updated one window of deterministic synthetic rides at a time.
//!
//! It lives in the library (not in the binary) so the `checkpoint` tool
//! (the `checkpoint-cli` crate) can decode its snapshots (`checkpoint dump`).

use std::collections::BTreeMap;

use checkpoint_core::{Checkpoint, WindowId};
use serde::Serialize;

/// Synthetic rides generated per window.
pub const RIDES_PER_WINDOW: u64 = 1_000;

/// Pickup zones, numbered `0..ZONES`.
pub const ZONES: u64 = 12;

/// The aggregate: rides and revenue per pickup zone.
///
/// # Examples
///
/// ```
/// use checkpoint_core::{Snapshot, SnapshotMeta, WindowId};
/// use checkpoint_examples::ride_totals::{RIDES_PER_WINDOW, RideTotals};
///
/// let mut totals = RideTotals::default();
/// let window = WindowId::new(1_700_000_000, 0);
/// totals.process_window(window);
/// assert_eq!(totals.rides, RIDES_PER_WINDOW);
/// assert_eq!(totals.per_zone.values().sum::<u64>(), RIDES_PER_WINDOW);
///
/// let bytes = Snapshot::encode(&totals, SnapshotMeta::new("ride-totals", window))?;
/// let (header, restored) = Snapshot::decode::<RideTotals>(&bytes)?;
/// assert_eq!(header.type_name, "RideTotals");
/// assert_eq!((restored.rides, restored.revenue_cents), (totals.rides, totals.revenue_cents));
/// # Ok::<(), checkpoint_core::SnapshotError>(())
/// ```
#[derive(Debug, Default, Clone, PartialEq, Eq, Checkpoint, Serialize)]
pub struct RideTotals {
    /// Rides seen so far.
    pub rides: u64,
    /// Fares seen so far, in cents.
    pub revenue_cents: u64,
    /// Rides per pickup zone.
    pub per_zone: BTreeMap<u64, u64>,
    /// The busiest zone, computed on demand; rebuilt after a restore, never
    /// saved (a transient field).
    #[checkpoint(transient)]
    #[serde(skip)]
    pub busiest_cache: Option<u64>,
}

impl RideTotals {
    /// Adds one window's deterministic synthetic rides (the same rides for
    /// the same window sequence number, on every run).
    pub fn process_window(&mut self, window: WindowId) {
        for i in 0..RIDES_PER_WINDOW {
            let h = splitmix64(u64::from(window.sequence()) * RIDES_PER_WINDOW + i);
            // Skewed zones: low zone numbers are busier.
            let zone = (h % ZONES).min((h >> 8) % ZONES);
            let fare_cents = 500 + (h >> 20) % 4_000;
            self.rides += 1;
            self.revenue_cents += fare_cents;
            *self.per_zone.entry(zone).or_default() += 1;
        }
        self.busiest_cache = None;
    }

    /// The zone with the most rides (among ties, the highest-numbered),
    /// cached until the next window.
    pub fn busiest_zone(&mut self) -> Option<u64> {
        if self.busiest_cache.is_none() {
            self.busiest_cache = self.per_zone.iter().max_by_key(|(_, n)| **n).map(|(z, _)| *z);
        }
        self.busiest_cache
    }
}

fn splitmix64(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
