//! `generate`: writes a seeded NDJSON stream in the fixtures' mix (for load tests,
//! benchmarks and demos).

use anyhow::Result;
use clap::Args;
use ledger_core::gen::{GenConfig, Generator};
use std::io::{BufWriter, Write};

#[derive(Args)]
pub struct GenerateArgs {
    /// Number of lines to write.
    #[arg(long, default_value_t = 10_000)]
    pub events: usize,
    /// Seed; the same seed writes the same stream on every machine.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Number of distinct partners.
    #[arg(long, default_value_t = 40)]
    pub partners: usize,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let mut cfg = GenConfig::new(args.seed, args.events);
    cfg.partners = args.partners.max(1);
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for line in Generator::new(cfg) {
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
