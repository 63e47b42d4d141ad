//! Identifiers derived from content, in one place each: the identity key of an event's
//! `(source, id)`, uuid v5 names, and lower-case hex.
//!
//! Everything here is a pure function of its input, so a replay on any machine derives
//! the same keys and ids.

use sha2::{Digest, Sha256};

/// The identity key of `(source, id)` (SPEC §1's identity): the first 16 bytes of a
/// SHA-256 over the source's length (u64 BE), the source and the id — length-prefixed,
/// so that no two pairs meet. The durable log stores it in every record header; the
/// in-memory index of `replay --events` keys by it too.
pub fn identity_key(source: &str, id: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update((source.len() as u64).to_be_bytes());
    h.update(source.as_bytes());
    h.update(id.as_bytes());
    let full: [u8; 32] = h.finalize().into();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// `uuid_v5(NAMESPACE_URL, name)`: the ids the ledger gives what it derives (payouts use
/// [`crate::ledger::payout_id`], which hashes its escaped name the same way without
/// building it).
pub fn uuid_v5(name: &str) -> uuid::Uuid {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes())
}

/// Lower-case hex of `bytes` (digests, chain hashes, message ids).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// An id made of `prefix` and `key` (`redrive:` + an event's id, `sale:` + a sale id),
/// or, when that would be longer than an id may be (CONTRACT §1), `prefix` and the hash
/// of `(source, key)`: a function of its inputs either way.
pub fn fitting_id(prefix: &str, key: &str, source: &str) -> String {
    let plain = format!("{prefix}{key}");
    if plain.chars().count() <= crate::intake::MAX_ID_CHARS {
        plain
    } else {
        format!("{prefix}{}", hex(&identity_key(source, key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
        let all: Vec<u8> = (0..=255).collect();
        let expected: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&all), expected);
    }

    #[test]
    fn identity_keys_of_different_pairs_differ() {
        assert_ne!(identity_key("ab", "c"), identity_key("a", "bc"));
        assert_eq!(identity_key("erp", "1"), identity_key("erp", "1"));
    }

    #[test]
    fn uuid_v5_names_are_valid_version_5_uuids() {
        let id = uuid_v5("incentive-ledger:rejected:intake:7");
        assert_eq!(id.get_version_num(), 5);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(id, uuid_v5("incentive-ledger:rejected:intake:7"));
    }
}
