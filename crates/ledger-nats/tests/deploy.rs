//! The sample files in deploy/ are valid: the service's configuration parses with the
//! service's own reader.

#[test]
fn the_sample_config_parses() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/incentive-ledger.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let c = ledger_nats::Config::from_toml(&text).unwrap();
    assert_eq!(c.inbound.subjects, vec!["incentive.events.>".to_string()]);
    assert_eq!(c.nats.user.as_deref(), Some("ledger"));
}
