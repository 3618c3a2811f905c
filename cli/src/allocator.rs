//! The allocator's own figures on every component's /metrics.
//!
//! `allocated` is what the program holds (live objects); `resident` what the allocator keeps
//! in memory for it, freed pages not yet given back included (the allocator gives them back
//! over ~10 s as the program goes on allocating and freeing). The process' resident set is a
//! little more (code, stacks). So a component's memory reads as what it needs (`allocated`)
//! and what a burst of work left behind (the rest).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use tikv_jemalloc_ctl::{epoch, stats};

/// `allocator_allocated_bytes` and `allocator_resident_bytes`, read at each scrape.
#[derive(Debug)]
pub struct Figures;

impl Collector for Figures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // The figures are cached; advancing the epoch refreshes them.
        if epoch::advance().is_err() {
            return Ok(());
        }
        let figures = [
            ("allocator_allocated_bytes", "Bytes the program holds in live allocations", stats::allocated::read()),
            (
                "allocator_resident_bytes",
                "Bytes the allocator keeps resident, freed pages not yet given back included",
                stats::resident::read(),
            ),
        ];
        for (name, help, value) in figures {
            let Ok(value) = value else { continue };
            let gauge = ConstGauge::new(value as i64);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}
