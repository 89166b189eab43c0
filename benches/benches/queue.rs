//! Connector status tracking: cost of recording a message and polling, per event.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mailjournal_queue::{Connector, Duration, Timestamp};
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

criterion_group!(benches, connector_status);
criterion_main!(benches);
