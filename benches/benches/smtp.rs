//! The SMTP session core alone: DATA-phase throughput (dot-unstuffing and end detection over
//! a 10 MB CRLF text body) beside a bare `memchr` scan of the same bytes, and whole
//! EHLO/MAIL/RCPT/DATA/QUIT transactions of a small message per second.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mailjournal_definition::{Policy, provision};
use mailjournal_smtp::data::{DataReceiver, dot_stuff};
use mailjournal_smtp::{Event, Session, SessionConfig};

/// 10 MB of 76-column text lines, a tenth of them starting with a dot.
fn body(size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 100);
    let mut n: u32 = 1;
    while out.len() < size {
        n = n.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        if n.is_multiple_of(10) {
            out.push(b'.');
        }
        for i in 0..75u32 {
            out.push(b'a' + ((n >> (i % 24)) % 26) as u8);
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn data_phase(c: &mut Criterion) {
    let wire = dot_stuff(&body(10_000_000));
    let mut group = c.benchmark_group("smtp_data_phase");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.bench_function("mailjournal-unstuff-10MB", |b| {
        b.iter(|| {
            let mut rx = DataReceiver::new().detect_bare_line_endings(false);
            let (mut done, mut bytes) = (false, 0usize);
            // 64 KiB reads, as a socket delivers them; the sink sees slices of each read.
            for chunk in wire.chunks(64 * 1024) {
                let (_, end) = rx.feed_with(chunk, |run| bytes += run.len());
                done |= end;
            }
            black_box((done, bytes))
        })
    });
    let mut out = Vec::with_capacity(wire.len());
    group.bench_function("mailjournal-unstuff-into-vec-10MB", |b| {
        b.iter(|| {
            out.clear();
            let mut rx = DataReceiver::new().detect_bare_line_endings(false);
            // 64 KiB reads, as a socket delivers them.
            let mut done = false;
            for chunk in wire.chunks(64 * 1024) {
                let (_, end) = rx.feed(chunk, &mut out);
                done |= end;
            }
            black_box((done, out.len()))
        })
    });
    group.bench_function("memchr-scan-10MB", |b| {
        b.iter(|| black_box(memchr::memchr_iter(b'\n', black_box(&wire)).count()))
    });
    group.finish();
}

fn transactions(c: &mut Criterion) {
    let mut config = provision::starter_config("contoso.com").unwrap_or_default();
    if let Some(j) = config.journal.first_mut() {
        j.additional_source_ip_ranges = vec!["127.0.0.0/8".into()];
        j.encrypted = false;
    }
    let Ok((policy, _)) = Policy::from_config(&config) else {
        return;
    };
    let policy = Arc::new(policy);
    let session_config = Arc::new(SessionConfig::default());
    let mut dialog = b"EHLO client.example\r\nMAIL FROM:<>\r\nRCPT TO:<journaling@journal.contoso.com>\r\nDATA\r\n".to_vec();
    dialog.extend_from_slice(&dot_stuff(&body(2_000)));
    let quit = b"QUIT\r\n";
    let mut group = c.benchmark_group("smtp_transaction");
    group.throughput(Throughput::Elements(1));
    group.bench_function("ehlo_mail_rcpt_data_quit_2KB", |b| {
        b.iter(|| {
            let mut s = Session::new(
                session_config.clone(),
                policy.clone(),
                "127.0.0.1"
                    .parse()
                    .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
            );
            s.feed(&dialog);
            while let Some(event) = s.poll_event() {
                if let Event::MessageComplete { .. } = event {
                    s.committed("Q");
                }
            }
            s.feed(quit);
            black_box(s.take_output().len())
        })
    });
    group.finish();
}

criterion_group!(benches, data_phase, transactions);
criterion_main!(benches);
