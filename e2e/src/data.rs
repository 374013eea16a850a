//! Deterministic test data: line protocol whose every value can be
//! recomputed from (writer, row), so tests check each value read back.

use std::fmt::Write;

/// Base timestamp of generated rows (2026-01-01T00:00:00Z).
pub const BASE_TIME: i64 = 1_767_225_600_000_000_000;

/// The expected values of one generated row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub host: String,
    pub region: String,
    pub time: i64,
    pub usage: f64,
    pub count: i64,
    pub ok: bool,
}

/// Row `i` of writer `w` (unique `time` per (w, i)).
pub fn row(w: u32, i: u64) -> Row {
    Row {
        host: format!("host-{}", (i % 97) + 100 * u64::from(w)),
        region: ["us-east", "eu-west", "ap south"][(i % 3) as usize].to_string(),
        time: BASE_TIME + (i as i64) * 1_000 + i64::from(w),
        usage: (i as f64) * 0.5 + f64::from(w),
        count: (i as i64) * 3 - 7,
        ok: i % 2 == 0,
    }
}

/// Line protocol for rows `range` of writer `w` in table `table`.
pub fn lines(table: &str, w: u32, range: std::ops::Range<u64>) -> String {
    let mut s = String::with_capacity((range.end - range.start) as usize * 96);
    for i in range {
        let r = row(w, i);
        let _ = writeln!(
            s,
            "{table},host={},region={} usage={:?},count={}i,ok={} {}",
            r.host,
            r.region.replace(' ', "\\ "),
            r.usage,
            r.count,
            r.ok,
            r.time
        );
    }
    s
}
