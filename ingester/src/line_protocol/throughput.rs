//! A throughput check run by hand, not an assertion:
//!
//! ```text
//! cargo test --release -- --ignored --nocapture tsbs_cpu_throughput
//! ```
//!
//! `LP_BENCH_KIND=integer|float`, `LP_BENCH_LINES` and `LP_BENCH_ROUNDS`
//! narrow it down (e.g. to run it under `valgrind --tool=callgrind`).

use super::Parser;

/// Lines per second on TSBS `cpu` lines (10 tags, 10 fields), with integer
/// or float (TSBS's 16 fractional digits) values.
#[test]
#[ignore = "throughput measurement, run by hand in release mode"]
fn tsbs_cpu_throughput() {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let lines_per_run = env("LP_BENCH_LINES", 200_000);
    let rounds = env("LP_BENCH_ROUNDS", 5);
    let tags = |i: usize| {
        format!(
            "cpu,hostname=host_{},region=eu-central-1,datacenter=eu-central-1a,rack={},\
             os=Ubuntu15.10,arch=x86,team=SF,service={},service_version=1,\
             service_environment=test",
            i % 4000,
            i % 97,
            i % 19
        )
    };
    let names = [
        "usage_user",
        "usage_system",
        "usage_idle",
        "usage_nice",
        "usage_iowait",
        "usage_irq",
        "usage_softirq",
        "usage_steal",
        "usage_guest",
        "usage_guest_nice",
    ];
    let build = |float: bool| {
        let mut input = String::new();
        for i in 0..lines_per_run {
            input.push_str(&tags(i));
            for (j, name) in names.iter().enumerate() {
                let sep = if j == 0 { ' ' } else { ',' };
                let v = (i * 31 + j * 17) % 100;
                if float {
                    // TSBS writes 16 fractional digits.
                    let frac =
                        (i as u64 * 7_919 + j as u64 * 104_729).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    input.push_str(&format!(
                        "{sep}{name}={v}.{:016}",
                        frac % 10_000_000_000_000_000
                    ));
                } else {
                    input.push_str(&format!("{sep}{name}={v}i"));
                }
            }
            input.push_str(&format!(
                " {}\n",
                1_451_606_400_000_000_000i64 + i as i64 * 10_000_000_000
            ));
        }
        input
    };
    let kind = std::env::var("LP_BENCH_KIND").unwrap_or_default();
    for (label, float) in [("integer fields", false), ("float fields", true)] {
        if !kind.is_empty() && !label.starts_with(&kind) {
            continue;
        }
        let input = build(float);
        let (mut best, mut best_cpu) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..rounds {
            let started = std::time::Instant::now();
            let cpu_started = thread_cpu_seconds();
            let mut parser = Parser::new(std::hint::black_box(input.as_bytes()));
            let (mut lines, mut checksum) = (0usize, 0usize);
            while let Some(line) = parser.next_line() {
                let line = line.expect("valid line");
                lines += 1;
                checksum += line.tags.len() + line.fields.len();
            }
            std::hint::black_box(checksum);
            assert_eq!(lines, lines_per_run);
            best = best.min(started.elapsed().as_secs_f64());
            if let (Some(end), Some(start)) = (thread_cpu_seconds(), cpu_started) {
                best_cpu = best_cpu.min(end - start);
            }
        }
        // On a shared machine wall time includes waiting for a core; the
        // thread's own CPU time does not.
        println!(
            "{label} ({} bytes/line): wall {:.2} M lines/s; on-CPU {:.2} M lines/s, {:.0} MB/s",
            input.len() / lines_per_run,
            lines_per_run as f64 / best / 1e6,
            lines_per_run as f64 / best_cpu / 1e6,
            input.len() as f64 / best_cpu / 1e6,
        );
    }
}

/// Time this thread has run on a CPU (Linux: first field of schedstat, ns).
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}
