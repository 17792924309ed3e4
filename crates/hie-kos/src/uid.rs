//! DICOM UIDs: the [`UidSource`] that hands out the manifest's new UIDs, the rooted generator
//! [`RootedUids`], the syntax check (DICOM PS3.5 9.1) and the numeric-aware order used to sort
//! evidence deterministically.

use std::cmp::Ordering;
use std::hash::{BuildHasher, RandomState};
use std::time::{SystemTime, UNIX_EPOCH};

/// DICOM PS3.5 9.1: a UID is at most 64 characters.
pub const MAX_UID_LEN: usize = 64;

/// Where a manifest's new UIDs (its series and its SOP instance) come from.
pub trait UidSource {
    /// A UID never handed out before. Must satisfy [`is_valid_uid`].
    fn next_uid(&mut self) -> String;
}

/// UIDs under an organisation root: `<root>.<unique>.<counter>`.
///
/// `<unique>` is fixed per generator: microseconds since the Unix epoch at creation times 1000, plus
/// three random digits, so two broker instances (or a restart) under one root do not collide.
/// `<counter>` starts at 1. Every component is written without leading zeros, and the root is
/// limited so that the longest possible UID still fits in 64 characters.
#[derive(Debug, Clone)]
pub struct RootedUids {
    prefix: String,
    counter: u32,
}

/// The root given for UID generation is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UidError {
    /// Not UID syntax (digits and dots, no empty or zero-led components).
    #[error("UID root {root:?} is not a valid UID (digits separated by dots, no leading zeros)")]
    MalformedRoot { root: String },
    /// Too long to leave room for the generated components.
    #[error("UID root {root:?} has {len} characters; at most {max} leave room for the generated part")]
    RootTooLong { root: String, len: usize, max: usize },
}

impl RootedUids {
    /// The longest root accepted: 64 minus ".<u64: 20 digits>.<u32: 10 digits>".
    pub const MAX_ROOT_LEN: usize = MAX_UID_LEN - 1 - 20 - 1 - 10;

    /// A generator under `root`, unique per process start.
    pub fn new(root: &str) -> Result<Self, UidError> {
        let micros = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_micros());
        let micros = u64::try_from(micros).unwrap_or(u64::MAX / 1000);
        // RandomState is seeded per process from the OS; three digits of it separate two
        // instances started in the same microsecond.
        let random = RandomState::new().hash_one(std::process::id()) % 1000;
        Self::with_unique(root, micros.saturating_mul(1000).saturating_add(random).max(1))
    }

    /// A generator with a caller-chosen unique component (tests, or a unique value kept elsewhere).
    pub fn with_unique(root: &str, unique: u64) -> Result<Self, UidError> {
        if !is_valid_uid(root) {
            return Err(UidError::MalformedRoot { root: root.to_owned() });
        }
        if root.len() > Self::MAX_ROOT_LEN {
            return Err(UidError::RootTooLong { root: root.to_owned(), len: root.len(), max: Self::MAX_ROOT_LEN });
        }
        // Zero is a valid component but a poor unique value; 1 keeps the syntax rule simple.
        Ok(Self { prefix: format!("{root}.{}", unique.max(1)), counter: 0 })
    }
}

impl UidSource for RootedUids {
    fn next_uid(&mut self) -> String {
        self.counter = self.counter.checked_add(1).unwrap_or_else(|| {
            // After 2^32 UIDs move to a fresh unique component rather than repeat one.
            self.prefix.push('1');
            1
        });
        let uid = format!("{}.{}", self.prefix, self.counter);
        debug_assert!(is_valid_uid(&uid), "{uid}");
        uid
    }
}

/// DICOM PS3.5 9.1: 1 to 64 characters, components of digits separated by single dots, and no
/// component with a leading zero unless it is `0` itself.
pub fn is_valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= MAX_UID_LEN
        && uid.split('.').all(|component| {
            !component.is_empty()
                && component.bytes().all(|byte| byte.is_ascii_digit())
                && (component == "0" || !component.starts_with('0'))
        })
}

/// A looser check for UIDs we only reference: real archives hold UIDs with leading zeros, and the
/// manifest must still reference those instances. Refuses what can't be a UID at all.
pub(crate) fn is_referenceable_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= MAX_UID_LEN
        && uid.bytes().all(|byte| byte.is_ascii_digit() || byte == b'.')
        && uid.split('.').all(|component| !component.is_empty())
}

/// Orders UIDs component by component, numerically (`1.2.9` before `1.2.10`), then by the raw text
/// so that the order is total and agrees with string equality.
pub fn compare_uids(left: &str, right: &str) -> Ordering {
    let numeric = left.split('.').zip(right.split('.')).find_map(|(a, b)| {
        let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
        let order = a.len().cmp(&b.len()).then_with(|| a.cmp(b));
        (order != Ordering::Equal).then_some(order)
    });
    numeric.unwrap_or_else(|| left.split('.').count().cmp(&right.split('.').count())).then_with(|| left.cmp(right))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax() {
        assert!(is_valid_uid("1.2.840.10008.5.1.4.1.1.88.59"));
        assert!(is_valid_uid("2.25.0"));
        assert!(!is_valid_uid(""));
        assert!(!is_valid_uid("1.02"));
        assert!(!is_valid_uid("1..2"));
        assert!(!is_valid_uid("1.2."));
        assert!(!is_valid_uid("1.2a"));
        assert!(!is_valid_uid(&"1.".repeat(32)));
        assert!(is_referenceable_uid("1.02.3"));
        assert!(!is_referenceable_uid("1.2 "));
    }

    #[test]
    fn rooted_uids_are_valid_unique_and_short() {
        let root = "1.2.826.0.1.3680043.10.54321.999";
        assert_eq!(root.len(), RootedUids::MAX_ROOT_LEN);
        let mut uids = RootedUids::with_unique(root, u64::MAX).unwrap();
        uids.counter = u32::MAX - 2;
        let generated: Vec<String> = (0..5).map(|_| uids.next_uid()).collect();
        for uid in &generated {
            assert!(is_valid_uid(uid), "{uid}");
            assert!(uid.starts_with(root));
        }
        let distinct: std::collections::BTreeSet<_> = generated.iter().collect();
        assert_eq!(distinct.len(), generated.len());

        let mut uids = RootedUids::new("1.2.3").unwrap();
        let first = uids.next_uid();
        assert!(is_valid_uid(&first) && first.ends_with(".1"), "{first}");
        assert_ne!(first, uids.next_uid());
    }

    #[test]
    fn bad_roots_are_refused() {
        assert!(matches!(RootedUids::new("1.2.03"), Err(UidError::MalformedRoot { .. })));
        assert!(matches!(RootedUids::new("org.example"), Err(UidError::MalformedRoot { .. })));
        let long = "1.2.3.4.5.6.7.8.9.10.11.12.13.14.15";
        assert!(matches!(RootedUids::new(long), Err(UidError::RootTooLong { .. })));
    }

    #[test]
    fn numeric_order() {
        let mut uids = vec!["1.2.10", "1.2.9", "1.2", "1.10.1", "1.2.09"];
        uids.sort_by(|a, b| compare_uids(a, b));
        assert_eq!(uids, ["1.2", "1.2.09", "1.2.9", "1.2.10", "1.10.1"]);
    }
}
