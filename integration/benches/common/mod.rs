//! What the benchmark files share: criterion's settings.

use std::time::Duration;

use criterion::Criterion;

/// Short measurements by default, so `integration/benches/run.sh` takes a few minutes on
/// two cores; `BENCH_MEASURE_MS` / `BENCH_WARMUP_MS` lengthen them.
pub fn config() -> Criterion {
    let ms = |var: &str, default: u64| {
        Duration::from_millis(
            std::env::var(var)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default),
        )
    };
    Criterion::default()
        .warm_up_time(ms("BENCH_WARMUP_MS", 300))
        .measurement_time(ms("BENCH_MEASURE_MS", 1000))
        .sample_size(30)
        .configure_from_args()
}
