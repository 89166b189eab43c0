//! The sans-IO queue: connector status per event, and the item lifecycle at scale
//! (enqueue + poll + answer for 10 k, 100 k and 1 M items: the per-item cost must stay flat).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mailjournal_queue::{
    Connector, Duration, ItemId, ItemMeta, MatchResult, Queue, QueueParams, Timestamp, Timing,
};
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
    for n in [10_000u64, 100_000, 1_000_000] {
        group.throughput(Throughput::Elements(n));
        group.bench_with_input(BenchmarkId::new("enqueue_poll_merge", n), &n, |b, &n| {
            b.iter(|| {
                let mut q = Queue::with_capacity(QueueParams::default(), n as usize);
                let t0 = Timestamp(1_700_000_000_000);
                for i in 0..n {
                    let meta = ItemMeta {
                        id: ItemId(i),
                        definition: String::new(),
                        sender: String::new(),
                        recipients: Vec::new(),
                        received_at: t0 + Duration(i),
                        timing: Timing::default(),
                    };
                    let _ = q.enqueue(meta, t0);
                }
                let actions = q.poll(t0 + Duration(n));
                for (i, _) in actions.iter().enumerate() {
                    let _ = q.on_match_result(ItemId(i as u64), MatchResult::Found(ItemId(0)), t0);
                }
                black_box(actions.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, connector_status, lifecycle);
criterion_main!(benches);
