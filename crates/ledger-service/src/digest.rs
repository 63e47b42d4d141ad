//! The status digest without copying history under the fold's lock.
//!
//! SPEC §7's digest hashes the balances, the claims and then every payout, so each new
//! position needs every payout again. [`PayoutCanon`] keeps the canonical form of the
//! payouts already seen in a temporary file (not in memory), appending only the ones
//! issued since the last digest: under the projection's read lock a digest copies the
//! state's rows and the *new* payouts, and the history is read back from the file
//! after the lock is released.

use ledger_core::document::{BalanceRow, ClaimRow, PayoutDigest, PayoutRow};
use ledger_core::Replay;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};

/// The canonical rows of the payouts `0..count`, one a line, in a temporary file.
pub(crate) struct PayoutCanon {
    file: File,
    count: usize,
}

/// What a digest needs of the projection, copied under its read lock.
pub(crate) struct DigestInput {
    balances: Vec<BalanceRow>,
    claims: Vec<ClaimRow>,
    /// Canonical rows of the payouts issued since the file's last one.
    new_payouts: Vec<u8>,
    new_count: usize,
}

impl PayoutCanon {
    pub(crate) fn new() -> std::io::Result<PayoutCanon> {
        Ok(PayoutCanon {
            file: tempfile::tempfile()?,
            count: 0,
        })
    }

    /// Copies what the digest of `replay` needs: O(entries + claims + new payouts),
    /// never the payouts already in the file.
    pub(crate) fn input(&self, replay: &Replay) -> DigestInput {
        let ledger = replay.ledger();
        let payouts = replay.payouts();
        assert!(
            replay.holds_all_history() && payouts.len() >= self.count,
            "payouts are only appended"
        );
        let mut new_payouts = Vec::new();
        for p in &payouts[self.count..] {
            PayoutRow::from(p).write_jcs(&mut new_payouts);
            new_payouts.push(b'\n');
        }
        DigestInput {
            balances: ledger.balances().iter().map(BalanceRow::from).collect(),
            claims: ledger.claims().iter().map(ClaimRow::from).collect(),
            new_payouts,
            new_count: payouts.len() - self.count,
        }
    }

    /// Appends the new payouts to the file and hashes the whole text.
    pub(crate) fn digest(&mut self, input: DigestInput) -> std::io::Result<String> {
        self.file.seek(SeekFrom::End(0))?;
        self.file.write_all(&input.new_payouts)?;
        self.count += input.new_count;
        let mut digest = PayoutDigest::begin(&input.balances, &input.claims);
        self.file.rewind()?;
        let mut reader = BufReader::with_capacity(1 << 16, &self.file);
        let mut line = Vec::with_capacity(512);
        let mut rows = 0usize;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            digest.payout_jcs(line.strip_suffix(b"\n").unwrap_or(&line));
            rows += 1;
        }
        if rows != self.count {
            // The file lost or gained rows (it is not ours to change): start it over.
            let count = self.count;
            self.file.set_len(0)?;
            self.count = 0;
            return Err(std::io::Error::other(format!(
                "the status digest's payout file holds {rows} rows, not {count}"
            )));
        }
        Ok(digest.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_core::gen::{GenConfig, Generator};

    /// Digests taken at many positions through the file equal the document's.
    #[test]
    fn digests_through_the_payout_file_equal_the_documents() {
        let mut canon = PayoutCanon::new().unwrap();
        let mut replay = Replay::new();
        for (i, line) in Generator::new(GenConfig::new(8, 2500)).enumerate() {
            replay.push(line.as_bytes(), i as u64 + 1);
            if i % 397 == 0 || i == 2499 {
                let input = canon.input(&replay);
                assert_eq!(
                    canon.digest(input).unwrap(),
                    replay.document().digest,
                    "line {i}"
                );
            }
        }
        assert!(canon.count > 100);
    }
}
