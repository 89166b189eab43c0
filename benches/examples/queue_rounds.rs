//! Runs `ROUNDS` rounds of enqueue + poll + answer + prune for `N` items through one queue,
//! for counting instructions per item with callgrind (time depends on caches; instructions
//! show whether the work per item depends on how many items are held):
//!
//! ```text
//! cargo build --release -p mailjournal-benches --example queue_rounds
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/queue_rounds N ROUNDS
//! ```
//!
//! Instructions per item = (total for 2 rounds − total for 1 round) / N.

use mailjournal::queue::{Duration, Queue, QueueParams, Timestamp};
use mailjournal_benches::queue_round;

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>());
    let (Some(Ok(n)), Some(Ok(rounds))) = (args.next(), args.next()) else {
        eprintln!("usage: queue_rounds ITEMS ROUNDS");
        std::process::exit(2);
    };
    let t0 = Timestamp(1_700_000_000_000);
    let mut queue = Queue::with_capacity(QueueParams::default(), n as usize);
    let mut actions = 0;
    for round in 0..rounds {
        let first = round * n;
        let now = t0 + Duration(first + n);
        actions += queue_round(&mut queue, first, n, t0, now);
        queue.prune(now + Duration(1));
    }
    println!("{actions} actions");
}
