//! The status digest without copying history under the fold's lock.
//!
//! SPEC §7's digest hashes the balances, the claims and then every payout, so each new
//! position needs every payout again. [`PayoutCanon`] keeps the canonical form of the
//! payouts already seen in a temporary file (not in memory), appending only the ones
//! issued since the last digest, read from the history archive: under the projection's
//! read lock a digest copies the state's rows and the count of payouts issued; the
//! payouts are read after the lock is released.

use ledger_core::document::{BalanceRow, ClaimRow, PayoutDigest, PayoutRow};
use ledger_core::Replay;
use ledger_log::Archive;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};

/// The canonical rows of the payouts `0..count`, one a line, in a temporary file.
pub(crate) struct PayoutCanon {
    file: File,
    count: usize,
}

/// What a digest needs of the projection, taken under its read lock: the digest with
/// the balances and claims hashed, and the payouts issued at that position.
pub(crate) struct DigestInput {
    state: PayoutDigest,
    issued: u64,
}

impl DigestInput {
    /// Hashes the balances and claims of `replay` row by row: O(entries + claims) time
    /// under the lock, and no copy of them (a copy of every row as strings had been
    /// ~125 MB at 5M events, most of a restart's peak), never a payout.
    pub(crate) fn of(replay: &Replay) -> DigestInput {
        let ledger = replay.ledger();
        let mut state = PayoutDigest::new();
        for b in ledger.balances_iter() {
            state.balance(&BalanceRow::from(&b));
        }
        for c in ledger.claims_iter() {
            state.claim(&ClaimRow::from(&c));
        }
        DigestInput {
            state,
            issued: replay.payouts_issued(),
        }
    }
}

impl PayoutCanon {
    pub(crate) fn new() -> std::io::Result<PayoutCanon> {
        Ok(PayoutCanon {
            file: tempfile::tempfile()?,
            count: 0,
        })
    }

    /// Appends the payouts issued since the file's last one (read from `archive`) to
    /// the file, and hashes the whole text.
    pub(crate) fn digest(
        &mut self,
        input: DigestInput,
        archive: &Archive,
    ) -> std::io::Result<String> {
        assert!(
            input.issued >= self.count as u64,
            "payouts are only appended"
        );
        self.file.seek(SeekFrom::End(0))?;
        let mut new = Vec::new();
        while (self.count as u64) < input.issued {
            let from = self.count as u64;
            let to = input.issued.min(from + 4096);
            let payouts = archive.payouts(from, to).map_err(std::io::Error::other)?;
            if payouts.len() as u64 != to - from {
                return Err(std::io::Error::other(format!(
                    "the history archive holds payouts up to {}, not {to}",
                    from + payouts.len() as u64
                )));
            }
            new.clear();
            for p in &payouts {
                PayoutRow::from(p).write_jcs(&mut new);
                new.push(b'\n');
            }
            self.file.write_all(&new)?;
            self.count += payouts.len();
        }
        let mut digest = input.state;
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

    /// Digests taken at many positions through the file and the archive equal the
    /// document's of a replay that kept its history.
    #[test]
    fn digests_through_the_payout_file_equal_the_documents() {
        let mut canon = PayoutCanon::new().unwrap();
        let archive = Archive::temporary().unwrap();
        let mut drained = Replay::new();
        let mut whole = Replay::new();
        for (i, line) in Generator::new(GenConfig::new(8, 2500)).enumerate() {
            drained.push(line.as_bytes(), i as u64 + 1);
            whole.push(line.as_bytes(), i as u64 + 1);
            if i % 397 == 0 || i == 2499 {
                archive.write(&drained.drain_history()).unwrap();
                let input = DigestInput::of(&drained);
                assert_eq!(
                    canon.digest(input, &archive).unwrap(),
                    whole.document().digest,
                    "line {i}"
                );
            }
        }
        assert!(canon.count > 100);
    }
}
