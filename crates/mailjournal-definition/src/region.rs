//! The journal smart hosts per region, from the specification's send-connector table. Each
//! region has two hosts (`-1` and `-2`); Microsoft 365 routes the journal domain through both.

/// One region of the smart-host table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Short name used on the command line (`eu`, `de`, `us`, …).
    pub code: &'static str,
    /// The name the specification gives.
    pub name: &'static str,
    /// The two journal smart hosts.
    pub smart_hosts: [&'static str; 2],
}

/// Every region of the specification, in its order.
pub const REGIONS: &[Region] = &[
    Region {
        code: "eu",
        name: "Europe (Excluding Germany)",
        smart_hosts: [
            "eu-smtp-journal-1.mimecast.com",
            "eu-smtp-journal-2.mimecast.com",
        ],
    },
    Region {
        code: "de",
        name: "Germany",
        smart_hosts: [
            "de-smtp-journal-1.mimecast.com",
            "de-smtp-journal-2.mimecast.com",
        ],
    },
    Region {
        code: "us",
        name: "United States of America",
        smart_hosts: [
            "us-smtp-journal-1.mimecast.com",
            "us-smtp-journal-2.mimecast.com",
        ],
    },
    Region {
        code: "usb",
        name: "United States of America (B)",
        smart_hosts: [
            "usb-smtp-journal-1.mimecast.com",
            "usb-smtp-journal-2.mimecast.com",
        ],
    },
    Region {
        code: "ca",
        name: "Canada",
        smart_hosts: [
            "ca-smtp-journal-1.mimecast.com",
            "ca-smtp-journal-2.mimecast.com",
        ],
    },
    Region {
        code: "za",
        name: "South Africa",
        smart_hosts: [
            "za-smtp-journal-1.mimecast.co.za",
            "za-smtp-journal-2.mimecast.co.za",
        ],
    },
    Region {
        code: "au",
        name: "Australia",
        smart_hosts: [
            "au-smtp-journal-1.mimecast.com",
            "au-smtp-journal-2.mimecast.com",
        ],
    },
    Region {
        code: "je",
        name: "Offshore",
        smart_hosts: [
            "je-smtp-journal-1.mimecast-offshore.com",
            "je-smtp-journal-2.mimecast-offshore.com",
        ],
    },
    Region {
        code: "uspcom",
        name: "USPCOM",
        smart_hosts: [
            "uspcom-smtp-journal-1.mimecast-pscom-us.com",
            "uspcom-smtp-journal-2.mimecast-pscom-us.com",
        ],
    },
];

/// Finds a region by its code or its full name, case-insensitively; `offshore` also finds `je`.
///
/// ```
/// use mailjournal_definition::region::lookup;
/// assert_eq!(lookup("DE").unwrap().smart_hosts[1], "de-smtp-journal-2.mimecast.com");
/// assert_eq!(lookup("South Africa").unwrap().code, "za");
/// assert_eq!(lookup("offshore").unwrap().code, "je");
/// assert!(lookup("mars").is_none());
/// ```
pub fn lookup(name: &str) -> Option<&'static Region> {
    let name = name.trim();
    REGIONS
        .iter()
        .find(|r| r.code.eq_ignore_ascii_case(name) || r.name.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_region_has_two_numbered_hosts_of_its_code() {
        assert_eq!(REGIONS.len(), 9);
        for region in REGIONS {
            assert!(region.smart_hosts[0].starts_with(&format!("{}-smtp-journal-1.", region.code)));
            assert!(region.smart_hosts[1].starts_with(&format!("{}-smtp-journal-2.", region.code)));
            assert_eq!(lookup(region.code), Some(region));
        }
    }
}
