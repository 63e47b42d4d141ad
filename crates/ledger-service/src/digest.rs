//! The status digest without copying history under the fold's lock.
//!
//! SPEC §7's digest hashes the balances, the claims and then every payout, so each new
//! position needs every payout again. A [`PayoutCanon`] keeps the canonical form of the
//! payouts already seen in a temporary file (not in memory), appending only the ones
//! issued since the last digest, read from the history archive: under the projection's
//! read lock a digest copies the state's rows and the count of payouts issued; the
//! payouts are read after the lock is released.

use ledger_core::document::PayoutDigest;
use ledger_core::Replay;
use ledger_log::{Archive, PayoutCanon};

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
        DigestInput {
            state: replay.state_digest(),
            issued: replay.payouts_issued(),
        }
    }
}

/// Appends the payouts issued since `canon`'s last one (read from `archive`) and hashes
/// the whole text.
pub(crate) fn digest(
    canon: &mut PayoutCanon,
    input: DigestInput,
    archive: &Archive,
) -> std::io::Result<String> {
    assert!(input.issued >= canon.count(), "payouts are only appended");
    while canon.count() < input.issued {
        let from = canon.count();
        let to = input.issued.min(from + 4096);
        let payouts = archive.payouts(from, to).map_err(std::io::Error::other)?;
        if payouts.len() as u64 != to - from {
            return Err(std::io::Error::other(format!(
                "the history archive holds payouts up to {}, not {to}",
                from + payouts.len() as u64
            )));
        }
        canon.append(&payouts)?;
    }
    canon.digest(input.state)
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
                    digest(&mut canon, input, &archive).unwrap(),
                    whole.document().digest,
                    "line {i}"
                );
            }
        }
        assert!(canon.count() > 100);
    }
}
