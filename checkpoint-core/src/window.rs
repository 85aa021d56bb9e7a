//! Streaming window ids, as in Apache Apex.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The id of a streaming window.
///
/// A window id is a `u64`: the high 32 bits are the job's *base seconds*
/// (Unix time when the job first started), the low 32 bits are a sequence
/// number that grows by one per streaming window. A job keeps its base
/// forever, so ids recorded by inputs and sinks stay comparable across
/// recoveries and restarts. Ids order as their `u64` value.
///
/// `Display` and `FromStr` use Apex's form: `0x` followed by 16 lower-case hex
/// digits. On the wire (serde) a window id is its `u64`.
///
/// # Examples
///
/// ```
/// use checkpoint_core::WindowId;
///
/// let w = WindowId::new(0x65a1_b2c3, 7);
/// assert_eq!(w.to_string(), "0x65a1b2c300000007");
/// assert_eq!(w.base_seconds(), 0x65a1_b2c3);
/// assert_eq!(w.sequence(), 7);
/// assert_eq!(w.next().sequence(), 8);
/// assert_eq!("0x65a1b2c300000007".parse::<WindowId>().unwrap(), w);
/// assert!(w < w.next());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WindowId(u64);

impl WindowId {
    /// The window id with the given base seconds and sequence number.
    pub const fn new(base_seconds: u32, sequence: u32) -> Self {
        WindowId(((base_seconds as u64) << 32) | sequence as u64)
    }

    /// The window id whose `u64` form is `raw`.
    pub const fn from_u64(raw: u64) -> Self {
        WindowId(raw)
    }

    /// The `u64` form of this id.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The job's base seconds (high 32 bits).
    pub const fn base_seconds(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The window's sequence number within the job (low 32 bits).
    pub const fn sequence(self) -> u32 {
        self.0 as u32
    }

    /// The id of the following window: same base, sequence + 1.
    ///
    /// # Panics
    ///
    /// Panics if the sequence number is already `u32::MAX` (at one window per
    /// 500 ms that is 68 years of windows); use [`WindowId::checked_next`] to
    /// handle that case.
    pub const fn next(self) -> Self {
        match self.checked_next() {
            Some(next) => next,
            None => panic!("window sequence number overflow"),
        }
    }

    /// The id of the following window, or `None` if the sequence number would
    /// overflow 32 bits.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_core::WindowId;
    ///
    /// assert_eq!(WindowId::new(1, u32::MAX).checked_next(), None);
    /// assert_eq!(WindowId::new(1, 4).checked_next(), Some(WindowId::new(1, 5)));
    /// ```
    pub const fn checked_next(self) -> Option<Self> {
        match self.sequence().checked_add(1) {
            Some(seq) => Some(WindowId::new(self.base_seconds(), seq)),
            None => None,
        }
    }

    /// Whether this window is the last of a group of `count` consecutive
    /// windows, groups counted from sequence 0: `(sequence + 1) % count ==
    /// 0`, the rule that aligns application windows and checkpoints.
    ///
    /// Computed without overflow: the last possible window (sequence
    /// `u32::MAX`) ends a group only if `count` divides 2^32. A `count` of
    /// 0 has no groups.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_core::WindowId;
    ///
    /// assert!(WindowId::new(1, 59).ends_group_of(60));
    /// assert!(!WindowId::new(1, 60).ends_group_of(60));
    /// assert!(WindowId::new(1, u32::MAX).ends_group_of(4));
    /// assert!(!WindowId::new(1, u32::MAX).ends_group_of(3));
    /// assert!(!WindowId::new(1, 5).ends_group_of(0));
    /// ```
    pub const fn ends_group_of(self, count: u32) -> bool {
        (self.sequence() as u64 + 1).is_multiple_of(count as u64)
    }

    /// The id of the preceding window, or `None` at sequence 0.
    ///
    /// A job's initial checkpoint is taken at the window just before its
    /// first window (Apex's `INITIAL_CHECKPOINT`).
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_core::WindowId;
    ///
    /// assert_eq!(WindowId::new(9, 1).checked_prev(), Some(WindowId::new(9, 0)));
    /// assert_eq!(WindowId::new(9, 0).checked_prev(), None);
    /// ```
    pub const fn checked_prev(self) -> Option<Self> {
        match self.sequence().checked_sub(1) {
            Some(seq) => Some(WindowId::new(self.base_seconds(), seq)),
            None => None,
        }
    }
}

impl fmt::Display for WindowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#018x}", self.0)
    }
}

impl fmt::Debug for WindowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WindowId({:#018x})", self.0)
    }
}

impl From<WindowId> for u64 {
    fn from(w: WindowId) -> u64 {
        w.0
    }
}

impl From<u64> for WindowId {
    fn from(raw: u64) -> WindowId {
        WindowId(raw)
    }
}

/// The error returned when a string is not a window id.
///
/// # Examples
///
/// ```
/// use checkpoint_core::WindowId;
///
/// let err = "65a1b2c300000007".parse::<WindowId>().unwrap_err();
/// assert!(err.to_string().contains("0x"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid window id {input:?}: expected `0x` followed by 1 to 16 hex digits, like 0x65a1b2c300000007")]
pub struct ParseWindowIdError {
    input: String,
}

impl FromStr for WindowId {
    type Err = ParseWindowIdError;

    /// Parses Apex's form, `0x` + hex digits (upper or lower case). Leading
    /// zeros may be left out; more than 16 digits are rejected.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseWindowIdError {
            input: s.chars().take(64).collect(),
        };
        let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).ok_or_else(err)?;
        if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err());
        }
        u64::from_str_radix(digits, 16).map(WindowId).map_err(|_| err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_split_as_apex_does() {
        let w = WindowId::new(0xdead_beef, 0x1234_5678);
        assert_eq!(w.as_u64(), 0xdead_beef_1234_5678);
        assert_eq!(WindowId::from_u64(w.as_u64()), w);
    }

    #[test]
    fn order_is_u64_order_across_bases() {
        let a = WindowId::new(1, u32::MAX);
        let b = WindowId::new(2, 0);
        assert!(a < b);
    }

    #[test]
    fn display_pads_to_sixteen_digits() {
        assert_eq!(WindowId::new(0, 1).to_string(), "0x0000000000000001");
        assert_eq!(format!("{:?}", WindowId::new(0, 1)), "WindowId(0x0000000000000001)");
    }

    #[test]
    fn parse_round_trips_and_rejects_garbage() {
        for raw in [0, 1, u64::MAX, 0x65a1_b2c3_0000_0007] {
            let w = WindowId::from_u64(raw);
            assert_eq!(w.to_string().parse::<WindowId>(), Ok(w));
        }
        assert_eq!("0x7".parse::<WindowId>(), Ok(WindowId::from_u64(7)));
        assert_eq!("0XFF".parse::<WindowId>(), Ok(WindowId::from_u64(255)));
        for bad in ["", "0x", "7", "0x+7", "0x-1", "0x1g", "0x00000000000000001", " 0x1"] {
            assert!(bad.parse::<WindowId>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn next_and_prev_stay_in_base() {
        let w = WindowId::new(5, 0);
        assert_eq!(w.checked_prev(), None);
        assert_eq!(w.next(), WindowId::new(5, 1));
        assert_eq!(w.next().checked_prev(), Some(w));
        assert_eq!(WindowId::new(5, u32::MAX).checked_next(), None);
    }

    #[test]
    fn serde_is_the_plain_u64() {
        let w = WindowId::new(3, 4);
        let bytes = postcard::to_allocvec(&w).expect("encode");
        assert_eq!(bytes, postcard::to_allocvec(&w.as_u64()).expect("encode"));
        let back: WindowId = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, w);
    }
}
