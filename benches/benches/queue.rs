//! The sans-IO queue: connector status per event, and the item lifecycle at scale
//! (enqueue + poll + answer for 10 k, 100 k and 1 M items: the per-item cost must stay flat).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mailjournal_benches::queue_round;
use mailjournal_queue::{Connector, Duration, Queue, QueueParams, Timestamp};
use std::hint::black_box;

fn connector_status(c: &mut Criterion) {
    let mut group = c.benchmark_group("connector_status");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("on_message_then_poll_x1000", |b| {
        b.iter(|| {
            let mut connector = Connector::new(Duration::minutes(180), false);
            for i in 0..1000u64 {
                let now = Timestamp(i * 60_000);
                black_box(connector.on_message(now));
                black_box(connector.poll(now + Duration::minutes(200)));
            }
        })
    });
    group.finish();
}

fn lifecycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("queue_lifecycle");
    group.sample_size(10);
    let t0 = Timestamp(1_700_000_000_000);
    for n in [10_000u64, 100_000, 1_000_000] {
        group.throughput(Throughput::Elements(n));
        // A fresh queue each time: includes first-touch of all its memory.
        group.bench_with_input(BenchmarkId::new("enqueue_poll_merge", n), &n, |b, &n| {
            b.iter(|| {
                let mut q = Queue::with_capacity(QueueParams::default(), n as usize);
                black_box(queue_round(&mut q, 0, n, t0, t0 + Duration(n)))
            })
        });
        // One queue across rounds, pruned after each, as in a running server: `n` items
        // pass through a queue that already holds room for them.
        group.bench_with_input(BenchmarkId::new("steady_state", n), &n, |b, &n| {
            let mut q = Queue::with_capacity(QueueParams::default(), n as usize);
            let mut first = 0;
            b.iter(|| {
                let now = t0 + Duration(first + n);
                let done = queue_round(&mut q, first, n, t0, now);
                q.prune(now + Duration(1));
                first += n;
                black_box(done)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, connector_status, lifecycle);
criterion_main!(benches);
