//! Row keys and write outcomes shared by the scenarios: which writer and
//! which row a `time` encodes, and what each request's answer was.

use std::sync::{Arc, Mutex};

use sluice_e2e::data::BASE_TIME;

/// One day in nanoseconds: rows spread over two days land in two partitions.
pub const DAY: i64 = 86_400 * 1_000_000_000;

pub use sluice_e2e::Outcome;

/// Per writer, the outcome of each of its requests in order.
pub type Log = Arc<Mutex<Vec<Vec<Outcome>>>>;

/// The `time` of row `n` of writer `w`: odd writers write the second day,
/// so every request spans one partition per writer parity.
pub fn time_of(w: u32, n: u64) -> i64 {
    BASE_TIME + DAY * i64::from(w % 2) + n as i64 * 1_000 + i64::from(w)
}

/// The inverse of [`time_of`]: `(writer, row)`.
pub fn key_of(time: i64) -> (u32, u64) {
    let d = time - BASE_TIME;
    let w = (d % 1_000) as u32;
    (w, ((d - DAY * i64::from(w % 2)) / 1_000) as u64)
}
