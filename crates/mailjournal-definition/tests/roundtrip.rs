//! Serialize → parse round trips of arbitrary configurations, in both formats.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mailjournal_definition::{
    Config, InboundChecks, InternalDomain, JournalDefinition, JournalType, TransportType,
};
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    // Any printable text, quotes, backslashes and non-ASCII included.
    "[ -~äé\"\\\\]{0,24}"
}

fn journal() -> impl Strategy<Value = JournalDefinition> {
    (
        (
            text(),
            text(),
            prop::collection::vec(text(), 0..4),
            any::<bool>(),
            text(),
        ),
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<bool>()),
        (
            any::<[bool; 8]>(),
            prop_oneof![
                Just(TransportType::Smtp),
                "[a-z]{1,8}".prop_map(TransportType::Unsupported)
            ],
        ),
    )
        .prop_map(
            |(
                (description, address, ranges, auth, password),
                (delay, attempts, period, eml),
                (flags, transport),
            )| {
                let transport_type = match transport {
                    TransportType::Unsupported(s) if s.eq_ignore_ascii_case("smtp") => {
                        TransportType::Smtp
                    }
                    other => other,
                };
                JournalDefinition {
                    description,
                    transport_type,
                    disabled: flags[0],
                    service_email_address: address,
                    additional_source_ip_ranges: ranges,
                    use_smtp_authentication: auth,
                    password,
                    initial_process_delay_minutes: delay,
                    delivery_wait_attempts: attempts,
                    period_of_inactivity_allowed_minutes: period,
                    journal_type: if eml {
                        JournalType::Eml
                    } else {
                        JournalType::Eej
                    },
                    encrypted: flags[1],
                    prefer_clear_text_version: flags[2],
                    extended_deduplication: flags[3],
                    remove_journal_headers: flags[4],
                    journal_non_internal_addresses: flags[5],
                    journal_unknown_internal_addresses: flags[6],
                    retention_days: flags[0].then_some(delay + 1),
                }
            },
        )
}

fn config() -> impl Strategy<Value = Config> {
    (
        prop::collection::vec(journal(), 0..3),
        prop::collection::vec(
            (
                prop::option::of(text()),
                prop::collection::vec(text(), 0..3),
                any::<bool>(),
                any::<bool>(),
            ),
            0..3,
        ),
        prop::collection::vec(text(), 0..4),
        any::<u64>(),
    )
        .prop_map(|(journal, domains, known, size)| {
            let mut config = Config {
                journal,
                ..Config::default()
            };
            config.server.max_message_size_bytes = size & 0x7fff_ffff_ffff_ffff; // TOML integers are i64
            config.directory.known_addresses = known;
            config.internal_domain = domains
                .into_iter()
                .map(|(name, names, accept, anti)| InternalDomain {
                    name,
                    names,
                    inbound_checks: if accept {
                        InboundChecks::AcceptAllInbounds
                    } else {
                        InboundChecks::DefaultChecks
                    },
                    anti_spoofing_policy: anti,
                })
                .collect();
            config
        })
}

proptest! {
    #[test]
    fn toml_round_trip(config in config()) {
        let text = config.to_toml().unwrap();
        prop_assert_eq!(Config::from_toml(&text).unwrap(), config);
    }

    #[test]
    fn json_round_trip(config in config()) {
        prop_assert_eq!(Config::from_json(&config.to_json()).unwrap(), config);
    }

    #[test]
    fn validation_is_deterministic_and_never_panics(config in config()) {
        prop_assert_eq!(config.validate(), config.validate());
    }
}
