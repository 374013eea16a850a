//! Staggered WAL rotation: pod *i* of *n* rotates at offset *i·interval/n*
//! within each interval, so the pods' persist bursts (each rotation marks
//! the closed segment's partitions for persistence) never coincide.
//!
//! Slots are counted from the Unix epoch, so every operator replica (and a
//! restarted one) computes the same schedule. The memory of which slot each
//! pod last rotated in is in-process only: after an operator restart a pod
//! simply waits for its next slot. Bounded by the number of pods seen; a
//! pod's entry is dropped when it is gone.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The slot pod `ordinal` of `pods` is in at `now`, and when the next
/// starts. `interval` must be non-zero (validation guarantees ≥ 1 s).
pub fn slot(now: SystemTime, interval: Duration, ordinal: u32, pods: u32) -> (u64, SystemTime) {
    let interval_ms = interval.as_millis().max(1);
    let offset_ms = interval_ms * u128::from(ordinal) / u128::from(pods.max(1));
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let since = now_ms.saturating_sub(offset_ms);
    let index = since / interval_ms;
    let next_ms = offset_ms + (index + 1) * interval_ms;
    let next = UNIX_EPOCH + Duration::from_millis(u64::try_from(next_ms).unwrap_or(u64::MAX));
    (u64::try_from(index).unwrap_or(u64::MAX), next)
}

/// Which slot each pod last rotated in.
#[derive(Debug, Default)]
pub struct RotationMemory {
    last: HashMap<String, u64>,
}

impl RotationMemory {
    /// True if `pod` (a key unique across `Ingester`s) should rotate now,
    /// i.e. it entered a new slot since the last call. The first sighting
    /// only records the slot: a new operator must not rotate every pod at
    /// once.
    pub fn due(&mut self, pod: &str, slot: u64) -> bool {
        match self.last.insert(pod.to_string(), slot) {
            None => false,
            Some(prev) => prev < slot,
        }
    }

    /// Forgets pods for which `keep` is false.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.last.retain(|k, _| keep(k));
    }

    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn pods_are_spread_over_the_interval() {
        let interval = Duration::from_secs(600);
        // Slot boundaries of 3 pods: 0 s, 200 s and 400 s into each interval.
        let boundaries: Vec<_> = (0..3).map(|i| slot(at(6000), interval, i, 3).1).collect();
        assert_eq!(boundaries, [at(6600), at(6200), at(6400)]);
        // One pod: the whole interval.
        assert_eq!(slot(at(6000), interval, 0, 1).1, at(6600));
    }

    #[test]
    fn slot_advances_once_per_interval() {
        let interval = Duration::from_secs(60);
        let (a, next) = slot(at(1000), interval, 1, 2);
        let (b, _) = slot(next - Duration::from_millis(1), interval, 1, 2);
        let (c, _) = slot(next, interval, 1, 2);
        assert_eq!(a, b);
        assert_eq!(c, a + 1);
    }

    #[test]
    fn every_pod_rotates_once_per_interval_at_its_offset() {
        let interval = Duration::from_secs(90);
        let mut mem = RotationMemory::default();
        let mut rotations: Vec<(u32, u64)> = Vec::new();
        // Tick every second for five intervals.
        for t in 10_000..10_450 {
            for pod in 0..3 {
                let (s, _) = slot(at(t), interval, pod, 3);
                if mem.due(&format!("p{pod}"), s) {
                    rotations.push((pod, t));
                }
            }
        }
        for pod in 0..3 {
            let times: Vec<_> = rotations
                .iter()
                .filter(|(p, _)| *p == pod)
                .map(|(_, t)| *t)
                .collect();
            assert!(times.len() >= 4, "pod {pod}: {times:?}");
            assert!(times.windows(2).all(|w| w[1] - w[0] == 90), "{times:?}");
            assert!(
                times.iter().all(|t| t % 90 == u64::from(pod) * 30),
                "{times:?}"
            );
        }
    }

    #[test]
    fn first_sighting_does_not_rotate_and_retain_forgets() {
        let mut mem = RotationMemory::default();
        assert!(!mem.due("a", 5));
        assert!(!mem.due("a", 5));
        assert!(mem.due("a", 6));
        mem.retain(|k| k != "a");
        assert!(mem.is_empty());
    }
}
