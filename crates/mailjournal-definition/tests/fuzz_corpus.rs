//! Replays every checked-in `definition_toml` fuzz input through the fuzz target's invariants,
//! so `cargo test` alone guards the regressions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mailjournal_definition::{Config, Policy};

#[test]
fn replay_definition_toml_corpus() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/definition_toml");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz corpus directory") {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        replayed += 1;
        let Ok(text) = std::str::from_utf8(&data) else {
            continue;
        };
        for parsed in [Config::from_toml(text), Config::from_json(text)] {
            let Ok(config) = parsed else { continue };
            let report = config.validate();
            assert_eq!(report, config.validate());
            assert_eq!(Policy::from_config(&config).is_ok(), !report.has_errors());
            if let Ok(toml) = config.to_toml() {
                assert_eq!(Config::from_toml(&toml).ok().as_ref(), Some(&config));
            }
        }
    }
    assert!(replayed >= 2, "the seed corpus is checked in");
}
