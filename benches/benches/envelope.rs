//! Journal item parsing side by side with what a user would otherwise run on the same bytes:
//! `mail-parser`'s full parse, and the floor, a bare `memchr::memmem` scan for `\n--`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mail_parser::MessageParser;
use mailjournal_benches::generated_report;
use mailjournal_envelope::{Format, JournalItem, ParseOptions};
use std::hint::black_box;
use std::time::Duration;

fn inputs() -> Vec<(String, Vec<u8>)> {
    let mut inputs = Vec::new();
    let corpus =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/eej/real");
    if let Ok(dir) = std::fs::read_dir(&corpus) {
        let mut files: Vec<_> = dir.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        for path in files {
            if let Ok(bytes) = std::fs::read(&path) {
                let name = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                inputs.push((name, bytes));
            }
        }
    }
    for (name, size) in [
        ("gen-100KB", 100_000),
        ("gen-1MB", 1_000_000),
        ("gen-10MB", 10_000_000),
        ("gen-50MB", 50_000_000),
    ] {
        inputs.push((name.to_owned(), generated_report(size)));
    }
    inputs
}

fn parse(c: &mut Criterion) {
    let options = ParseOptions::default();
    let finder = memchr::memmem::Finder::new(b"\n--");
    let mut group = c.benchmark_group("envelope_parse");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (name, bytes) in inputs() {
        let item = JournalItem::parse(&bytes, &options);
        assert_eq!(
            item.format(),
            Format::Envelope,
            "{name}: {:?}",
            item.step_down()
        );
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("mailjournal", &name),
            &bytes,
            |b, bytes| {
                b.iter(|| {
                    black_box(
                        JournalItem::parse(black_box(bytes), &options)
                            .recipients()
                            .len(),
                    )
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("mail-parser-full", &name),
            &bytes,
            |b, bytes| {
                b.iter(|| {
                    black_box(
                        MessageParser::default()
                            .parse(black_box(bytes))
                            .map(|m| m.parts.len()),
                    )
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("memmem-floor", &name),
            &bytes,
            |b, bytes| b.iter(|| black_box(finder.find_iter(black_box(bytes)).count())),
        );
    }
    group.finish();
}

/// What `journal-server inspect` does per file (read it once, parse) against the floor (read
/// it once, scan for `\n--`), on a 50 MB report in the page cache.
fn from_file(c: &mut Criterion) {
    let options = ParseOptions::default();
    let finder = memchr::memmem::Finder::new(b"\n--");
    let path = std::env::temp_dir().join(format!("mailjournal-bench-{}.eml", std::process::id()));
    let report = generated_report(50_000_000);
    if std::fs::write(&path, &report).is_err() {
        return;
    }
    let mut group = c.benchmark_group("envelope_file");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Bytes(report.len() as u64));
    group.bench_function("read+mailjournal/gen-50MB", |b| {
        b.iter(|| {
            let bytes = std::fs::read(&path).unwrap_or_default();
            black_box(JournalItem::parse(&bytes, &options).recipients().len())
        })
    });
    group.bench_function("read+memmem-floor/gen-50MB", |b| {
        b.iter(|| {
            let bytes = std::fs::read(&path).unwrap_or_default();
            black_box(finder.find_iter(&bytes).count())
        })
    });
    group.finish();
    let _ = std::fs::remove_file(&path);
}

/// What the pipeline reads of an EML item for its de-duplication key (fields, then the sent
/// date), on a message like the load client's, beside mail-parser's parse of its headers.
fn eml_key(c: &mut Criterion) {
    let options = ParseOptions {
        journal_type: Format::Eml,
        ..Default::default()
    };
    let mut message = b"From: <alice@contoso.com>\r\nTo: <journaling@journal.example.com>\r\n\
Subject: bench\r\nDate: Mon, 6 May 2024 09:14:58 +0000\r\nMIME-Version: 1.0\r\n\
Message-ID: <1.2.3@bench.example.org>\r\n\r\n"
        .to_vec();
    message.resize(20_480, b'x');
    let mut group = c.benchmark_group("eml_key");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("mailjournal/parse+sent_at-20KB", |b| {
        b.iter(|| {
            let item = JournalItem::parse(black_box(&message), &options);
            black_box((item.message_id().map(str::len), item.sent_at(&options)))
        })
    });
    group.bench_function("mail-parser/parse_headers-20KB", |b| {
        b.iter(|| {
            black_box(
                MessageParser::new()
                    .parse_headers(black_box(&message))
                    .and_then(|m| m.date().map(|d| d.to_timestamp())),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, parse, from_file, eml_key);
criterion_main!(benches);
