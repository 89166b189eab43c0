//! Time as plain numbers handed in by the host: milliseconds since the Unix epoch.

use serde::{Deserialize, Serialize};

/// A length of time in milliseconds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Duration(pub u64);

impl Duration {
    /// `n` minutes.
    pub const fn minutes(n: u64) -> Self {
        Duration(n.saturating_mul(60_000))
    }
    /// `n` seconds.
    pub const fn seconds(n: u64) -> Self {
        Duration(n.saturating_mul(1_000))
    }
    /// `n` days.
    pub const fn days(n: u64) -> Self {
        Duration(n.saturating_mul(86_400_000))
    }
    /// Milliseconds.
    pub const fn as_millis(self) -> u64 {
        self.0
    }
}

/// An instant: milliseconds since 1970-01-01T00:00:00Z.
///
/// ```
/// use mailjournal_queue::{Duration, Timestamp};
/// let t = Timestamp(1_000);
/// assert_eq!(t + Duration::seconds(2), Timestamp(3_000));
/// assert_eq!(Timestamp(3_000).since(t), Duration(2_000));
/// assert_eq!(t.since(Timestamp(3_000)), Duration(0));
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Time elapsed from `earlier` to `self`; zero when `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }
}

impl std::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.0))
    }
}

/// Calendar text for people and mail formats (UTC, seconds precision), without a date-time
/// dependency.
///
/// ```
/// use mailjournal_queue::Timestamp;
/// let t = Timestamp(1_796_155_968_000);
/// assert_eq!(t.rfc3339(), "2026-12-01T20:12:48Z");
/// assert_eq!(t.asctime(), "Tue Dec  1 20:12:48 2026");
/// assert_eq!(Timestamp::parse_utc("2026-12-01T20:12:48Z"), Some(t));
/// assert_eq!(Timestamp::parse_utc("2026-12-01"), Some(Timestamp(1_796_083_200_000)));
/// ```
impl Timestamp {
    /// `2026-01-01T00:00:00Z` for a timestamp (UTC, seconds precision).
    pub fn rfc3339(self) -> String {
        let t = self;
        let secs = t.0 / 1000;
        let (days, rem) = (secs / 86_400, secs % 86_400);
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        )
    }

    /// `Tue Dec  1 20:12:48 2026`: the date of an mbox `From ` line (asctime, UTC).
    pub fn asctime(self) -> String {
        let t = self;
        const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let text = t.rfc3339();
        let field = |range: std::ops::Range<usize>| text.get(range).unwrap_or("0");
        let month: usize = field(5..7).parse().unwrap_or(1);
        let day: u32 = field(8..10).parse().unwrap_or(1);
        format!(
            "{} {} {day:>2} {} {}",
            DAYS[(t.0 / 86_400_000 % 7) as usize],
            MONTHS[month.clamp(1, 12) - 1],
            field(11..19),
            field(0..4)
        )
    }

    /// Parses an instant given on the command line: `2026-12-01`, `2026-12-01T10:00:00` or
    /// `2026-12-01T10:00:00Z` (UTC). `None` when it is not one of those.
    pub fn parse_utc(text: &str) -> Option<Timestamp> {
        let text = text.strip_suffix('Z').unwrap_or(text);
        let (date, time) = text.split_once('T').unwrap_or((text, "00:00:00"));
        let number = |s: &str, len: usize| {
            (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<i64>().ok())
                .flatten()
        };
        let mut d = date.split('-');
        let (year, month, day) = (
            number(d.next()?, 4)?,
            number(d.next()?, 2)?,
            number(d.next()?, 2)?,
        );
        let mut t = time.split(':');
        let (hour, minute, second) = (
            number(t.next()?, 2)?,
            number(t.next()?, 2)?,
            number(t.next()?, 2)?,
        );
        if d.next().is_some()
            || t.next().is_some()
            || !(1..=12).contains(&month)
            || !(1..=31).contains(&day)
            || hour > 23
            || minute > 59
            || second > 60
            || year < 1970
        {
            return None;
        }
        // Days since 1970-01-01 from the civil date (Howard Hinnant's algorithm, inverted).
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (month + 9) % 12;
        let doy = (153 * mp + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
        u64::try_from(secs).ok().map(|s| Timestamp(s * 1000))
    }
}

#[cfg(test)]
mod calendar_tests {
    use super::*;
    fn rfc3339(t: Timestamp) -> String {
        t.rfc3339()
    }
    fn asctime(t: Timestamp) -> String {
        t.asctime()
    }
    fn parse_instant(text: &str) -> Option<Timestamp> {
        Timestamp::parse_utc(text)
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(Timestamp(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(Timestamp(951_782_400_000)), "2000-02-29T00:00:00Z");
        assert_eq!(
            rfc3339(Timestamp(1_798_761_599_000)),
            "2026-12-31T23:59:59Z"
        );
    }

    #[test]
    fn parses_what_it_formats_and_refuses_the_rest() {
        for t in [0, 951_782_400_000, 1_798_761_599_000] {
            assert_eq!(parse_instant(&rfc3339(Timestamp(t))), Some(Timestamp(t)));
        }
        assert_eq!(
            parse_instant("2000-02-29"),
            Some(Timestamp(951_782_400_000))
        );
        assert_eq!(
            asctime(Timestamp(1_796_155_968_000)),
            "Tue Dec  1 20:12:48 2026"
        );
        for bad in [
            "2026-13-01",
            "2026-1-01",
            "yesterday",
            "2026-12-01T25:00:00",
            "1969-12-31",
        ] {
            assert_eq!(parse_instant(bad), None, "{bad}");
        }
    }
}
