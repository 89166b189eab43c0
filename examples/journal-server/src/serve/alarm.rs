//! Alarms raised by threads that serve depends on: one that ends unexpectedly (a panic
//! included) or finds it can no longer do its work makes the server shut down and exit 1,
//! so that a service manager restarts it and start-up recovery takes over.

use std::sync::Arc;

/// Raises its alarm when dropped armed: by a thread that ends without disarming it, a panic's
/// unwinding included.
pub(crate) struct DeathAlarm(Option<Arc<tokio::sync::Notify>>);

impl DeathAlarm {
    pub(crate) fn armed(alarm: Arc<tokio::sync::Notify>) -> DeathAlarm {
        DeathAlarm(Some(alarm))
    }

    /// The thread ended as it should.
    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for DeathAlarm {
    fn drop(&mut self) {
        if let Some(alarm) = self.0.take() {
            // Kept until someone waits, if no one does yet.
            alarm.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_thread_that_panics_raises_its_alarm_and_one_that_ends_well_does_not() {
        let alarm = Arc::new(tokio::sync::Notify::new());
        let armed = DeathAlarm::armed(alarm.clone());
        let ended = std::thread::spawn(move || {
            let _armed = armed;
            panic!("a bug outside the parser's guard");
        })
        .join();
        assert!(ended.is_err());
        tokio::time::timeout(std::time::Duration::from_secs(5), alarm.notified())
            .await
            .expect("the alarm was raised");

        let quiet = Arc::new(tokio::sync::Notify::new());
        let armed = DeathAlarm::armed(quiet.clone());
        std::thread::spawn(move || armed.disarm()).join().unwrap();
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(200), quiet.notified()).await;
        assert!(waited.is_err(), "no alarm for a thread that ended well");
    }
}
