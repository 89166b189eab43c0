//! Arbitrary bytes as a configuration file: parsing and validation never panic, validation is
//! deterministic, and a configuration that validates compiles into a policy.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mailjournal_definition::{Config, Policy};

/// Runs one fuzz input; panics when an invariant breaks.
pub(crate) fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for parsed in [Config::from_toml(text), Config::from_json(text)] {
        let Ok(config) = parsed else { continue };
        let report = config.validate();
        assert_eq!(
            report,
            config.validate(),
            "validation must be deterministic"
        );
        assert_eq!(Policy::from_config(&config).is_ok(), !report.has_errors());
        if let Ok(toml) = config.to_toml() {
            assert_eq!(
                Config::from_toml(&toml).ok().as_ref(),
                Some(&config),
                "TOML round trip"
            );
        }
    }
}
