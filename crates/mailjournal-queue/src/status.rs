//! Connector service status: is a journal definition receiving mail?
//!
//! A connector is *down* when no message has arrived for longer than its period of inactivity
//! allowed, and comes back *up* with the next message. The status at any instant is a pure
//! function of the last message time; the transitions are reported once each by
//! [`Connector::on_message`] and [`Connector::poll`].

use serde::{Deserialize, Serialize};

use crate::{Duration, Timestamp};

/// The service status of one connector at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ConnectorStatus {
    /// No message has ever arrived.
    NeverSeen,
    /// A message arrived within the period of inactivity allowed.
    Up {
        /// When the last message arrived.
        last_message_at: Timestamp,
    },
    /// No message for longer than the period of inactivity allowed.
    Down {
        /// When the connector went down: the last message time plus the period.
        since: Timestamp,
        /// When the last message arrived.
        last_message_at: Timestamp,
    },
    /// The definition is disabled.
    Disabled {
        /// When the last message arrived, if ever.
        last_message_at: Option<Timestamp>,
    },
}

impl ConnectorStatus {
    /// The contract's name: `up`, `down`, `never_seen` or `disabled`.
    pub fn name(&self) -> &'static str {
        match self {
            ConnectorStatus::NeverSeen => "never_seen",
            ConnectorStatus::Up { .. } => "up",
            ConnectorStatus::Down { .. } => "down",
            ConnectorStatus::Disabled { .. } => "disabled",
        }
    }

    /// When the last message arrived, if ever.
    pub fn last_message_at(&self) -> Option<Timestamp> {
        match *self {
            ConnectorStatus::NeverSeen => None,
            ConnectorStatus::Up { last_message_at }
            | ConnectorStatus::Down {
                last_message_at, ..
            } => Some(last_message_at),
            ConnectorStatus::Disabled { last_message_at } => last_message_at,
        }
    }
}

/// A status transition, for alerting and logs. Each is reported exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    /// The status before.
    pub from: ConnectorStatus,
    /// The status after.
    pub to: ConnectorStatus,
    /// When the change happened (for *down*, the instant the period ran out).
    pub at: Timestamp,
}

/// The status tracker of one connector (one journal definition).
///
/// ```
/// use mailjournal_queue::{Connector, ConnectorStatus, Duration, Timestamp};
/// let mut c = Connector::new(Duration::minutes(180), false);
/// assert_eq!(c.status_at(Timestamp(0)), ConnectorStatus::NeverSeen);
/// let up = c.on_message(Timestamp(0));
/// assert_eq!(up[0].to.name(), "up");
/// assert_eq!(c.next_deadline(), Some(Timestamp(180 * 60_000 + 1)));
/// assert!(c.poll(Timestamp(180 * 60_000)).is_none()); // exactly the period: still up
/// let down = c.poll(Timestamp(180 * 60_000 + 1)).unwrap();
/// assert_eq!(down.to.name(), "down");
/// assert!(c.poll(Timestamp(999 * 60_000)).is_none()); // reported once
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connector {
    period: Duration,
    disabled: bool,
    last_message_at: Option<Timestamp>,
    /// The status last reported, so each transition is reported once.
    reported: ConnectorStatus,
}

impl Connector {
    /// A connector that has seen nothing yet.
    pub fn new(period_of_inactivity_allowed: Duration, disabled: bool) -> Self {
        Connector {
            period: period_of_inactivity_allowed,
            disabled,
            last_message_at: None,
            reported: if disabled {
                ConnectorStatus::Disabled {
                    last_message_at: None,
                }
            } else {
                ConnectorStatus::NeverSeen
            },
        }
    }

    /// A connector whose last message arrived at `last_message_at` (e.g. rebuilt from storage).
    /// Its current status counts as already reported.
    pub fn restore(
        period: Duration,
        disabled: bool,
        last_message_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Self {
        let mut c = Connector {
            period,
            disabled,
            last_message_at,
            reported: ConnectorStatus::NeverSeen,
        };
        c.reported = c.status_at(now);
        c
    }

    /// The status at `now`, without changing anything.
    pub fn status_at(&self, now: Timestamp) -> ConnectorStatus {
        match (self.disabled, self.last_message_at) {
            (true, last_message_at) => ConnectorStatus::Disabled { last_message_at },
            (false, None) => ConnectorStatus::NeverSeen,
            (false, Some(last)) => {
                let since = last + self.period;
                if now > since {
                    ConnectorStatus::Down {
                        since,
                        last_message_at: last,
                    }
                } else {
                    ConnectorStatus::Up {
                        last_message_at: last,
                    }
                }
            }
        }
    }

    /// Records a message accepted at `now` and returns the changes, oldest first: a *down*
    /// not yet reported (the host slept through the deadline), then the return to *up*.
    /// A message older than the last one recorded does not move the time back.
    pub fn on_message(&mut self, now: Timestamp) -> Vec<StatusChange> {
        let missed_down = self.poll(now);
        self.last_message_at = Some(self.last_message_at.map_or(now, |t| t.max(now)));
        missed_down
            .into_iter()
            .chain(self.report(now, now))
            .collect()
    }

    /// Reports the change when the connector has gone down since the last call.
    pub fn poll(&mut self, now: Timestamp) -> Option<StatusChange> {
        let at = match self.status_at(now) {
            ConnectorStatus::Down { since, .. } => since,
            _ => now,
        };
        self.report(now, at)
    }

    /// Enables or disables the definition; reports the change.
    pub fn set_disabled(&mut self, disabled: bool, now: Timestamp) -> Option<StatusChange> {
        self.disabled = disabled;
        self.report(now, now)
    }

    /// When [`poll`](Self::poll) next has something to report: the first instant past the
    /// period, while the connector is up.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        match self.reported {
            ConnectorStatus::Up { last_message_at } => {
                Some(last_message_at + self.period + Duration(1))
            }
            _ => None,
        }
    }

    fn report(&mut self, now: Timestamp, at: Timestamp) -> Option<StatusChange> {
        let current = self.status_at(now);
        if current.name() == self.reported.name() {
            self.reported = current;
            return None;
        }
        let change = StatusChange {
            from: self.reported,
            to: current,
            at,
        };
        self.reported = current;
        Some(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::minutes(180);

    #[test]
    fn down_after_exactly_the_period_and_up_on_next_message() {
        let mut c = Connector::new(PERIOD, false);
        let t0 = Timestamp(1_000_000);
        assert_eq!(c.on_message(t0)[0].to.name(), "up");
        assert_eq!(
            c.on_message(t0 + Duration::minutes(1)),
            vec![],
            "already up"
        );
        let last = t0 + Duration::minutes(1);
        assert_eq!(c.poll(last + PERIOD), None);
        let down = c.poll(last + PERIOD + Duration(1)).unwrap();
        assert_eq!(
            down.to,
            ConnectorStatus::Down {
                since: last + PERIOD,
                last_message_at: last
            }
        );
        assert_eq!(down.at, last + PERIOD);
        assert_eq!(c.next_deadline(), None);
        let later = last + Duration::days(1);
        let up = c.on_message(later);
        assert_eq!(up.len(), 1);
        assert_eq!(
            (up[0].from.name(), up[0].to.name(), up[0].at),
            ("down", "up", later)
        );
    }

    #[test]
    fn a_late_poll_reports_down_once_then_up_once() {
        let mut c = Connector::new(PERIOD, false);
        c.on_message(Timestamp(0));
        // The host slept through the deadline and a message arrives at once: the down period
        // is still reported, then the recovery.
        let late = Timestamp(0) + Duration::days(2);
        let changes = c.on_message(late);
        let names: Vec<_> = changes
            .iter()
            .map(|e| (e.from.name(), e.to.name()))
            .collect();
        assert_eq!(names, [("up", "down"), ("down", "up")]);
        assert_eq!(changes[0].at, Timestamp(0) + PERIOD);
    }

    #[test]
    fn disabled_connectors_stay_disabled() {
        let mut c = Connector::new(PERIOD, true);
        assert_eq!(c.status_at(Timestamp(0)).name(), "disabled");
        assert_eq!(c.on_message(Timestamp(5)), vec![]);
        assert_eq!(
            c.status_at(Timestamp(5)).last_message_at(),
            Some(Timestamp(5))
        );
        assert_eq!(c.poll(Timestamp(0) + Duration::days(9)), None);
        assert_eq!(
            c.set_disabled(false, Timestamp(10)).unwrap().to.name(),
            "up"
        );
    }

    #[test]
    fn restore_does_not_repeat_reported_status() {
        let c = Connector::restore(
            PERIOD,
            false,
            Some(Timestamp(0)),
            Timestamp(0) + Duration::days(1),
        );
        let mut c2 = c.clone();
        assert_eq!(c2.poll(Timestamp(0) + Duration::days(2)), None);
        assert_eq!(c.status_at(Timestamp(1)).name(), "up");
    }
}
