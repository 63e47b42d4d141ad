//! The canonical (RFC 8785) rows of payouts in issue order, in a temporary file: what a
//! replay digest hashes after the final state (SPEC §7 puts the payouts last), kept on
//! disk rather than in memory and formatted once. Used by the service's status digest
//! (appended position by position) and by simulations (appended as they fold).

use ledger_core::document::{PayoutDigest, PayoutRow};
use ledger_core::Payout;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};

/// Payouts `0..count` as canonical rows, one a line (a canonical row has no raw line
/// break: JSON escapes it in strings).
pub struct PayoutCanon {
    file: BufWriter<File>,
    count: u64,
    row: Vec<u8>,
}

impl PayoutCanon {
    pub fn new() -> std::io::Result<PayoutCanon> {
        Ok(PayoutCanon {
            file: BufWriter::with_capacity(1 << 16, tempfile::tempfile()?),
            count: 0,
            row: Vec::with_capacity(512),
        })
    }

    /// Payouts held.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Appends the next payouts, in issue order.
    pub fn append(&mut self, payouts: &[Payout]) -> std::io::Result<()> {
        for p in payouts {
            self.row.clear();
            PayoutRow::from(p).write_jcs(&mut self.row);
            self.row.push(b'\n');
            self.file.write_all(&self.row)?;
        }
        self.count += payouts.len() as u64;
        Ok(())
    }

    /// `state` (a digest with the final state hashed) finished with every payout held.
    /// If the file does not hold `count` rows (it is not ours alone: another process
    /// may have changed it), it is emptied and the error says so.
    pub fn digest(&mut self, mut state: PayoutDigest) -> std::io::Result<String> {
        self.file.flush()?;
        let file = self.file.get_mut();
        file.rewind()?;
        let mut reader = BufReader::with_capacity(1 << 16, &*file);
        let mut rows = 0u64;
        loop {
            self.row.clear();
            if reader.read_until(b'\n', &mut self.row)? == 0 {
                break;
            }
            state.payout_jcs(self.row.strip_suffix(b"\n").unwrap_or(&self.row));
            rows += 1;
        }
        file.seek(SeekFrom::End(0))?;
        if rows != self.count {
            let count = self.count;
            file.set_len(0)?;
            self.count = 0;
            return Err(std::io::Error::other(format!(
                "the payout file holds {rows} rows, not {count}"
            )));
        }
        Ok(state.finish())
    }
}
