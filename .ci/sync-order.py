#!/usr/bin/env python3
"""Checks, from an strace of journal-server, that every "250 ... queued as ID" reply left the
server only after what makes message ID survive a power loss had completed:

  1. the commit record naming ID was written to a log segment, and an fsync/fdatasync of that
     segment started after the write and finished before the reply;
  2. the segment's directory entry was durable: the segment existed before tracing began, or
     the log directory was fsynced after it was created and before the reply;
  3. for a message in its own data file (spool/data/ID): the file was synced, and its
     directory fsynced after its creation, before the reply.

  4. a spool segment moved to kept/ (retired: start-up no longer reads it) only after the
     archive store's write-ahead log was synced after its last write, after the moves of
     the segment's data files to kept/data/ were made durable (both directories synced), and
     after the archived content written before it was made durable: a syncfs that started
     after the last write to archive/pending/ and the last move out of it.

It also requires that the check proves something: every message sent was acknowledged
(--expect N), at least one took the data-file path, and at least one segment retired.

Usage: sync-order.py --self-test | [--expect N] TRACE...   (strace -f -qq -s 256 -e trace=openat,close,write,writev,
pwrite64,fsync,fdatasync,syncfs,sendto,rename,renameat,renameat2 -o TRACE journal-server serve ...)
Events are ordered by the line on which strace printed them: a whole line is one point in
time; an "<unfinished ...>" line is the call's start and its "<... resumed>" line its end,
except that a close takes effect at its start (the number is free for reuse from then on).
"""
import re
import sys

LINE = re.compile(r'^(\d+)\s+(?:<\.\.\. (\w+) resumed>(.*)|(\w+)\((.*))$')
RECORD_ID = re.compile(r'\{\\"id\\":\\"([0-9A-F]{16})\\"')
QUEUED = re.compile(r'250 2\.0\.0 Ok: queued as ([0-9A-F]{16})')


def events(path):
    """Yields (start, end, name, args, result) in order of completion."""
    pending = {}
    with open(path, errors="replace") as trace:
        for index, raw in enumerate(trace):
            match = LINE.match(raw.rstrip("\n"))
            if not match:
                continue
            pid = match.group(1)
            if match.group(2):  # "<... name resumed>rest"
                started = pending.pop((pid, match.group(2)), None)
                if started is None:
                    continue
                start, args = started
                args, result = split_result(args + match.group(3))
                yield start, index, match.group(2), args, result
                continue
            name, rest = match.group(4), match.group(5)
            if name == "close" and rest.endswith("<unfinished ...>"):
                # The kernel frees the number during close, so another thread's openat may
                # get it back before this line's "resumed" half: the close counts from here.
                yield index, index, name, rest[: -len("<unfinished ...>")].rstrip(), ""
                continue
            if rest.endswith("<unfinished ...>"):
                pending[(pid, name)] = (index, rest[: -len("<unfinished ...>")])
                continue
            args, result = split_result(rest)
            yield index, index, name, args, result


def split_result(text):
    """ "11)      = 0" -> ("11", "0"): the arguments without their closing parenthesis."""
    args, _, result = text.rpartition(" = ")
    args = args.rstrip()
    return (args[:-1] if args.endswith(")") else args), result.strip()


def first_arg(args):
    return args.split(",", 1)[0].strip()


def check(path, content_pending=False):
    """Returns (acknowledged, large, segments, syncs, retired, content_pending, problems) for
    one trace. content_pending: an earlier trace (an earlier run on the same data directory)
    left archived content that no syncfs made durable after it."""
    fds = {}  # fd -> path (threads of one process share them)
    created = {}  # path -> line where it was created
    record_writes = {}  # id -> list of (end line, segment path)
    syncs = []  # (start, end, path)
    data_synced = {}  # data file path -> end line of its first sync after its last write
    data_written = {}  # data file path -> end line of its last write
    wal_written = []  # end lines of writes to the archive store's write-ahead log
    renames = []  # (start, end, old, new)
    # end lines of writes to archive/pending/ and moves out of it (-1: in an earlier run)
    content_changed = [-1] if content_pending else []
    syncfs = []  # (start, end)
    acks = []  # (start line, id)
    for start, end, name, args, result in events(path):
        if name in ("sendto", "write", "writev"):
            for queued in QUEUED.findall(args):
                acks.append((start, queued))
        if name == "openat":
            target = re.search(r'"([^"]*)"', args)
            if target and result.split(" ")[0].isdigit():
                fds[result.split(" ")[0]] = target.group(1)
                if "O_CREAT" in args:
                    created.setdefault(target.group(1), end)
        elif name == "close":
            fds.pop(first_arg(args), None)
        elif name in ("write", "writev", "pwrite64"):
            path_ = fds.get(first_arg(args))
            if path_ is None:
                continue
            if "/spool/log/" in path_:
                for record_id in RECORD_ID.findall(args):
                    record_writes.setdefault(record_id, []).append((end, path_))
            elif "/spool/data/" in path_:
                data_written[path_] = end
            elif path_.endswith("-wal"):
                wal_written.append(end)
            elif "/archive/pending/" in path_:
                content_changed.append(end)
        elif name == "syncfs" and result == "0":
            syncfs.append((start, end))
        elif name in ("fsync", "fdatasync"):
            path_ = fds.get(first_arg(args))
            if path_ is not None and result == "0":
                syncs.append((start, end, path_))
                if "/spool/data/" in path_ and data_written.get(path_, -1) < start:
                    data_synced.setdefault(path_, end)
        elif name in ("rename", "renameat", "renameat2") and result == "0":
            paths = re.findall(r'"([^"]*)"', args)
            if len(paths) >= 2:
                renames.append((start, end, paths[0], paths[1]))
                if "/archive/pending/" in paths[0] and "/archive/pending/" not in paths[1]:
                    content_changed.append(end)

    def synced_between(path_, after, before):
        return any(s > after and e < before and p == path_ for s, e, p in syncs)

    def dir_durable(path_, before):
        made = created.get(path_)
        if made is None:
            return True  # existed before tracing began
        directory = path_.rsplit("/", 1)[0]
        return synced_between(directory, made, before)

    problems = []
    for ack, record_id in acks:
        writes = [(end, seg) for end, seg in record_writes.get(record_id, []) if end < ack]
        if not writes:
            problems.append(f"{record_id}: acknowledged with no commit record written before")
            continue
        end, segment = writes[-1]
        if not synced_between(segment, end, ack):
            problems.append(f"{record_id}: acknowledged before its segment was synced")
        if not dir_durable(segment, ack):
            problems.append(f"{record_id}: acknowledged before its new segment's directory was synced")
        data = next((p for p in data_written if p.endswith("/spool/data/" + record_id)), None)
        if data is not None:
            if data_synced.get(data, ack) >= ack:
                problems.append(f"{record_id}: acknowledged before its data file was synced")
            if not dir_durable(data, ack):
                problems.append(f"{record_id}: acknowledged before its data file's directory was synced")

    # Retirement: once a segment is in kept/, start-up no longer brings its items back, so
    # (a) the store's settled state must be durable (its WAL synced after its last write) and
    # (b) the segment's data files must be durably in kept/data (both directories synced)
    # before the segment's own rename.
    retired = 0
    previous = -1
    wal_paths = {p for _, _, p in syncs if p.endswith("-wal")}
    for start, end, old, new in renames:
        if "/spool/log/" not in old or "/spool/kept/" not in new:
            continue
        retired += 1
        name = old.rsplit("/", 1)[1]
        last_wal = max((w for w in wal_written if w < start), default=None)
        if last_wal is None:
            problems.append(f"{name}: retired with no archive-store write before it")
        elif not any(synced_between(p, last_wal, start) for p in wal_paths):
            problems.append(f"{name}: retired before the archive store's settled state was synced")
        last_content = max((c for c in content_changed if c < start), default=None)
        if last_content is not None and not any(
            s > last_content and e < start for s, e in syncfs
        ):
            problems.append(f"{name}: retired before the archived content was made durable")
        for s2, e2, old2, new2 in renames:
            if previous < e2 < start and "/spool/data/" in old2 and "/spool/kept/data/" in new2:
                for directory in (old2.rsplit("/", 1)[0], new2.rsplit("/", 1)[0]):
                    if not synced_between(directory, e2, start):
                        problems.append(f"{name}: retired before the move of {old2.rsplit('/', 1)[1]} was durable")
        previous = end
    large = sum(1 for _, i in acks if any(p.endswith("/spool/data/" + i) for p in data_written))
    segments = len({seg for writes in record_writes.values() for _, seg in writes})
    last_content = max(content_changed, default=None)
    content_pending = last_content is not None and not any(s > last_content for s, _ in syncfs)
    return len(acks), large, segments, len(syncs), retired, content_pending, problems


# A trace in which another thread's close of fd 6 is still "unfinished" when the committer's
# openat of the log directory gets 6 back (seen in CI): the directory sync must still count.
SELF_TEST = r"""1 openat(AT_FDCWD, "/d/spool/log/0.log", O_WRONLY|O_CREAT|O_EXCL|O_APPEND, 0666) = 5
2 close(6 <unfinished ...>
1 openat(AT_FDCWD, "/d/spool/log", O_RDONLY|O_CLOEXEC) = 6
2 <... close resumed>)              = 0
1 fsync(6)                          = 0
1 close(6)                          = 0
1 writev(5, [{iov_base="{\"id\":\"0123456789ABCDEF\",", iov_len=20}], 1) = 20
1 fdatasync(5)                      = 0
3 sendto(7, "250 2.0.0 Ok: queued as 0123456789ABCDEF\r\n", 42, MSG_NOSIGNAL, NULL, 0) = 42
"""

# Archived content written unsynced, made durable, and only then a segment retired.
CONTENT_TEST = r"""5 openat(AT_FDCWD, "/d/archive.sqlite3-wal", O_RDWR|O_CREAT|O_CLOEXEC, 0644) = 9
5 openat(AT_FDCWD, "/d/archive/pending/.aa.tmp", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0666) = 10
5 write(10, "archived form", 13)    = 13
5 close(10)                         = 0
5 rename("/d/archive/pending/.aa.tmp", "/d/archive/pending/aa") = 0
5 pwrite64(9, "settled", 7, 0)      = 7
5 syncfs(11)                        = 0
5 rename("/d/archive/pending/aa", "/d/archive/aa/aa") = 0
5 syncfs(11)                        = 0
5 fsync(9)                          = 0
5 rename("/d/spool/log/00000000000000000000.log", "/d/spool/kept/00000000000000000000.log") = 0
"""


def self_test():
    """The checker on SELF_TEST passes, and fails once the directory sync is taken out."""
    import os
    import tempfile

    def problems(text, expect_acked=1):
        with tempfile.NamedTemporaryFile("w", suffix=".trace", delete=False) as trace:
            trace.write(text)
        try:
            acked, *_, found = check(trace.name)
        finally:
            os.unlink(trace.name)
        assert acked == expect_acked, f"self-test: {acked} acknowledgements parsed"
        return found

    assert problems(SELF_TEST) == [], problems(SELF_TEST)
    without = SELF_TEST.replace("1 fsync(6)                          = 0\n", "")
    assert problems(without) == [
        "0123456789ABCDEF: acknowledged before its new segment's directory was synced"
    ], problems(without)
    assert problems(CONTENT_TEST, 0) == [], problems(CONTENT_TEST, 0)
    without = CONTENT_TEST.replace("5 syncfs(11)                        = 0\n", "", 2)
    without_last = "".join(CONTENT_TEST.rsplit("5 syncfs(11)                        = 0\n", 1))
    for text in (without, without_last):
        assert problems(text, 0) == [
            "00000000000000000000.log: retired before the archived content was made durable"
        ], problems(text, 0)
    print("sync order: checker self-test passed")


def main(paths, expect=None):
    totals = [0, 0, 0, 0, 0]
    problems = []
    content_pending = False
    for path in paths:
        *counts, content_pending, found = check(path, content_pending)
        totals = [t + c for t, c in zip(totals, counts)]
        problems += [f"{path}: {p}" for p in found]
    acked, large, segments, syncs, retired = totals
    print(f"sync order: {acked} acknowledged messages ({large} in data files) across "
          f"{segments} log segments, {syncs} syncs, {retired} segments retired; "
          f"{len(problems)} problems")
    for problem in problems[:20]:
        print("  " + problem)
    vacuous = []
    if expect is not None and acked != expect:
        vacuous.append(f"{acked} of the {expect} messages sent were acknowledged")
    if not large:
        vacuous.append("no acknowledged message took the data-file path")
    if not retired:
        vacuous.append("no segment retired")
    for reason in vacuous:
        print(f"  {reason}: the check would prove less than it says")
    if problems or vacuous:
        sys.exit(1)


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        self_test()
    elif sys.argv[1:2] == ["--expect"]:
        main(sys.argv[3:], int(sys.argv[2]))
    else:
        main(sys.argv[1:])
