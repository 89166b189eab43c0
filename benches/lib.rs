//! Shared inputs for the criterion benches in `benches/`; see `benches/README.md`.

/// A journal report of about `size` bytes: an envelope part with a few recipients and an
/// original carrying one large base64 attachment (76-column lines, CRLF), the shape that
/// makes a full MIME parse expensive.
///
/// ```
/// let report = mailjournal_benches::generated_report(100_000);
/// assert!(report.len() >= 100_000 && report.len() < 110_000);
/// ```
pub fn generated_report(size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 4096);
    out.extend_from_slice(
        b"From: Alice <alice@contoso.com>\r\nTo: Bob <bob@contoso.com>\r\nSubject: Quarterly figures\r\n\
Sender: <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@contoso.onmicrosoft.com>\r\n\
Message-ID: <5f1c2a77-1b2e-4d7c-9a1f-3c2b1a0f9e8d@journal.report.generator>\r\n\
Date: Mon, 6 May 2024 09:15:02 +0000\r\nMIME-Version: 1.0\r\nX-MS-Journal-Report:\r\n\
Content-Type: multipart/mixed;\r\n\tboundary=\"_jr_4f1c2a77-1b2e-4d7c-9a1f-3c2b1a0f9e8d_\"\r\n\r\n\
--_jr_4f1c2a77-1b2e-4d7c-9a1f-3c2b1a0f9e8d_\r\nContent-Type: text/plain; charset=\"us-ascii\"\r\n\
Content-Transfer-Encoding: 7bit\r\n\r\nSender: alice@contoso.com\r\nSubject: Quarterly figures\r\n\
Message-Id: <q3-figures@contoso.com>\r\nTo: bob@contoso.com\r\nCc: carol@contoso.com, Expanded: finance@contoso.com\r\n\
Bcc: legal@contoso.com\r\n\r\n--_jr_4f1c2a77-1b2e-4d7c-9a1f-3c2b1a0f9e8d_\r\nContent-Type: message/rfc822\r\n\r\n\
From: Alice <alice@contoso.com>\r\nTo: Bob <bob@contoso.com>\r\nSubject: Quarterly figures\r\n\
Message-ID: <q3-figures@contoso.com>\r\nDate: Mon, 6 May 2024 09:14:58 +0000\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"inner\"\r\n\r\n--inner\r\nContent-Type: text/plain\r\n\r\nFigures attached.\r\n\
--inner\r\nContent-Type: application/pdf; name=\"figures.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\
Content-Disposition: attachment; filename=\"figures.pdf\"\r\n\r\n",
    );
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut state: u32 = 0x9e37_79b9;
    while out.len() < size {
        for _ in 0..76 {
            // xorshift: incompressible, valid base64.
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            out.push(ALPHABET[(state & 63) as usize]);
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"--inner--\r\n\r\n--_jr_4f1c2a77-1b2e-4d7c-9a1f-3c2b1a0f9e8d_--\r\n");
    out
}

/// One round of the queue lifecycle for the items `first .. first + n` (received one
/// millisecond apart from `t0`, all due by `now`): enqueue them, poll, answer every match
/// attempt with a merge. Returns the number of actions.
///
/// ```
/// use mailjournal::queue::{Queue, QueueParams, Timestamp};
/// let mut queue = Queue::new(QueueParams::default());
/// let t0 = Timestamp(0);
/// assert_eq!(mailjournal_benches::queue_round(&mut queue, 0, 100, t0, Timestamp(100)), 100);
/// assert_eq!(queue.prune(Timestamp(101)), 100);
/// ```
pub fn queue_round(
    queue: &mut mailjournal::queue::Queue,
    first: u64,
    n: u64,
    t0: mailjournal::queue::Timestamp,
    now: mailjournal::queue::Timestamp,
) -> usize {
    use mailjournal::queue::{Action, Duration, ItemId, ItemMeta, MatchResult, Timing};
    for i in first..first + n {
        let meta = ItemMeta {
            id: ItemId(i),
            definition: String::new(),
            sender: String::new(),
            recipients: Vec::new(),
            received_at: t0 + Duration(i),
            timing: Timing::default(),
        };
        let _ = queue.enqueue(meta, now);
    }
    let actions = queue.poll(now);
    for action in &actions {
        if let Action::TryMatch(id) = *action {
            let _ = queue.on_match_result(id, MatchResult::Found(ItemId(0)), now);
        }
    }
    actions.len()
}
