#!/usr/bin/env python3
"""tests/fuse/fsutil.py: the Python half of the FUSE test helpers (stdlib only).

    fsutil.py gen-tar OUT.tar [--files N] [--seed S]   the generated test tree, as a tar
    fsutil.py manifest ROOT [--inodes] [--no-hash]     one JSON line per entry, sorted
    fsutil.py compare A.json B.json [--ignore F,...]   manifests equal? prints differences
    fsutil.py tree-compare A B                         stat comparison of two trees
    fsutil.py log-check FILE|-                         `weft log --json` has the documented shape
    fsutil.py log-field FILE|- FIELD...                node count newest.F oldest.F size=N
    fsutil.py json-check FILE|-                        one JSON value
    fsutil.py write-random PATH MIB [--seed S]         pseudo-random data, fsync; prints sha256
    fsutil.py sha256 PATH|-                            sha256 hex digest (fast)
    fsutil.py write-sync PATH TEXT                     write, fsync the file and its directory
    fsutil.py hold-synced PATH TEXT MARKER             write+fsync, keep it open, touch MARKER
    fsutil.py acked-writer PATH ACKFILE COUNT          records, fsync each, log each ack
    fsutil.py acked-verify PATH ACKFILE                every acked record is there
    fsutil.py append-writer PATH ID COUNT              O_APPEND records, one write(2) each
    fsutil.py append-verify PATH COUNT ID...           no record torn, lost or reordered
    fsutil.py dir-check DIR PREFIX N [--start S]       DIR holds PREFIX0..PREFIX{N-1}, once each
    fsutil.py atomic-save PATH TEXT                    temp file, fsync, rename over, fsync dir
    fsutil.py scandir-unlink DIR                       unlink entries while reading the dir
    fsutil.py reaper PID TMP LIB LOG                   cleanup after a test shell dies

Every check prints what it expected and what it got, and exits 1 on a mismatch.
"""

import os
import sys


def reaper_main(argv):
    """fsutil.py reaper PID TMP LIB LOG: waits for the test shell PID to die,
    however it dies, then runs lib.sh's teardown of TMP if the test's own trap
    did not finish it. It leaves the test's process group (setsid) before
    anything else, and says so by creating TMP/.state/reaper-ready, which
    fuse_begin waits for: a group kill can then no longer take it along."""
    import select
    import subprocess
    import time

    pid, tmp, lib, log_path = int(argv[0]), argv[1], argv[2], argv[3]
    pidfd = None
    if os.getppid() == pid:  # the shell is alive: the pid is not recycled
        try:
            pidfd = os.pidfd_open(pid)
        except (OSError, AttributeError):
            pidfd = None
        try:
            os.setsid()
        except PermissionError:  # a process-group leader cannot: fork first
            if os.fork():
                os._exit(0)
            os.setsid()
        open(os.path.join(tmp, ".state", "reaper-ready"), "w").close()
        if pidfd is not None:
            select.select([pidfd], [], [])  # readable once the process has exited
        else:
            while True:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.5)
    if not os.path.isdir(os.path.join(tmp, ".state")):
        return 0
    env = dict(os.environ)
    env.pop("WEFT_TEST_TAG", None)
    with open(log_path, "a") as log:
        log.write(f"--- {time.strftime('%F %T')} reaper: test shell {pid} died; cleaning {tmp}\n")
        log.flush()
        subprocess.run(["bash", lib, "teardown", tmp], stdout=log, stderr=log, env=env)
    return 0


if __name__ == "__main__" and sys.argv[1:2] == ["reaper"]:
    sys.exit(reaper_main(sys.argv[2:]))

import hashlib  # noqa: E402 (the reaper above starts without these)
import io  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import stat  # noqa: E402
import tarfile  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402

# --------------------------------------------------------------------------
# the generated tree

WORDS = (
    "the quick brown fox jumps over lazy dog weft fuse tree node merge text file "
    "version commit rename replica relay chunk sync mount share device editor save "
    "ünïcödé naïve café 日本 ελληνικά"
).split()


def gen_tree_entries(files, seed):
    """Yields tar members of a deterministic source-tree-like tree: `files` regular
    files (text and binary, 0 B to 512 KiB, various modes and owners), nested
    directories (one read-only), symlinks (relative, absolute, to directories,
    dangling) and awkward names. No hard links: weft refuses them."""
    rng = random.Random(seed)
    base_mtime = 1_600_000_000
    # Text files are slices of one corpus of random lines (fast to make). A
    # slice may cut a multi-byte character: such a file is binary to weft,
    # which is fine, the tree wants both kinds.
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 12))) for _ in range(60000)]
    corpus = ("\n".join(lines) + "\n").encode()
    dirs = [""]
    entries = []
    ndirs = max(4, files // 25)
    for i in range(ndirs):
        parent = rng.choice(dirs) if len(dirs) < 8 or rng.random() < 0.7 else ""
        if parent.count("/") >= 4:
            parent = ""
        name = rng.choice(["src", "lib", "doc", "test", "pkg", "include", "data", "sub"])
        path = f"{parent}/{name}{i}" if parent else f"{name}{i}"
        dirs.append(path)
    special_names = [
        "with space.txt",
        "-leading-dash",
        ".hidden",
        "ünïcödé-名前.md",
        "x" * 200 + ".txt",
        "a.b.c.d",
        "UPPER.TXT",
        "semi;colon&amp.txt",
    ]
    for i in range(files):
        parent = rng.choice(dirs)
        if i < len(special_names):
            name = special_names[i]
        else:
            name = f"f{i}" + rng.choice([".c", ".h", ".txt", ".md", ".bin", ".json", ""])
        path = f"{parent}/{name}" if parent else name
        roll = rng.random()
        if roll < 0.03:
            size = 0
        elif roll < 0.75:
            size = rng.randrange(1, 4096)
        elif roll < 0.99:
            size = rng.randrange(4096, 32768)
        else:
            size = rng.randrange(32768, 524288)
        if name.endswith(".bin") or rng.random() < 0.1:
            data = rng.randbytes(size)
        else:
            start = rng.randrange(0, len(corpus) - size)
            data = corpus[start : start + size]
        mode = rng.choice([0o644] * 12 + [0o755] * 3 + [0o600, 0o444, 0o640, 0o4755])
        owner = rng.choice([(0, 0)] * 8 + [(1000, 1000), (65534, 65534)])
        entries.append(("file", path, data, mode, owner, base_mtime + rng.randrange(0, 10**8)))
    files_made = [e[1] for e in entries]
    for i in range(max(2, files // 50)):
        parent = rng.choice(dirs)
        name = f"link{i}"
        path = f"{parent}/{name}" if parent else name
        kind = rng.random()
        if kind < 0.6:
            target_path = rng.choice(files_made)
            depth = parent.count("/") + (1 if parent else 0)
            target = "../" * depth + target_path
        elif kind < 0.75:
            target = "/etc/hostname"
        elif kind < 0.9:
            target = "does/not/exist"
        else:
            target_dir = rng.choice(dirs[1:])
            depth = parent.count("/") + (1 if parent else 0)
            target = "../" * depth + target_dir
        entries.append(("symlink", path, target, 0o777, (0, 0), base_mtime + i))
    dir_entries = []
    for i, path in enumerate(dirs[1:]):
        mode = 0o755
        if i == 3:
            mode = 0o555
        elif i == 5:
            mode = 0o700
        elif i == 7:
            mode = 0o1777
        dir_entries.append(("dir", path, None, mode, (0, 0), base_mtime + 1000 + i))
    dir_entries.append(("dir", "empty-dir", None, 0o755, (0, 0), base_mtime))
    # In the order `tar c` writes: each directory, then what is in it. (GNU
    # tar sets a directory's mtime when it leaves it; an entry that comes back
    # into it later would change it again.)
    return sorted(dir_entries + entries, key=lambda e: e[1].split("/"))


def cmd_gen_tar(args):
    out, files, seed = args.out, args.files, args.seed
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        top = tarfile.TarInfo("tree")
        top.type, top.mode, top.mtime, top.uname, top.gname = tarfile.DIRTYPE, 0o755, 1_600_000_000, "", ""
        tar.addfile(top)
        for kind, path, payload, mode, owner, mtime in gen_tree_entries(files, seed):
            info = tarfile.TarInfo("tree/" + path)
            info.mode = mode
            info.uid, info.gid = owner
            info.uname = info.gname = ""
            info.mtime = mtime
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = payload
                tar.addfile(info)
            else:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return 0


# --------------------------------------------------------------------------
# manifests


def file_kind(mode):
    for test, name in (
        (stat.S_ISREG, "file"),
        (stat.S_ISDIR, "dir"),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "chr"),
        (stat.S_ISBLK, "blk"),
    ):
        if test(mode):
            return name
    return "unknown"


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 20)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def describe(root, rel, with_hash=True, with_inode=False, with_xattrs=True):
    path = os.path.join(root, rel) if rel else root
    st = os.lstat(path)
    kind = file_kind(st.st_mode)
    entry = {
        "path": rel or ".",
        "type": kind,
        "mode": oct(stat.S_IMODE(st.st_mode)),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
    }
    if kind != "dir":
        entry["size"] = st.st_size
        entry["nlink"] = st.st_nlink
    if with_inode:
        entry["ino"] = st.st_ino
    if kind == "symlink":
        entry["target"] = os.readlink(path)
    if kind in ("chr", "blk"):
        entry["rdev"] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
    if kind == "file" and with_hash:
        entry["sha256"] = sha256_file(path)
    if with_xattrs and kind in ("file", "dir"):
        try:
            names = sorted(n for n in os.listxattr(path, follow_symlinks=False) if n.startswith("user."))
            entry["xattrs"] = {n: os.getxattr(path, n, follow_symlinks=False).hex() for n in names}
        except OSError as e:
            entry["xattrs"] = f"error: {e}"
    return entry


def walk(root):
    """Relative paths of every entry under root (not root itself), sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in dirnames + filenames:
            out.append(name if rel_dir == "." else os.path.join(rel_dir, name))
    return sorted(out)


def manifest(root, with_hash=True, with_inode=False):
    entries = [describe(root, "", with_hash, with_inode)]
    entries += [describe(root, rel, with_hash, with_inode) for rel in walk(root)]
    return entries


def cmd_manifest(args):
    for entry in manifest(args.root, not args.no_hash, args.inodes):
        print(json.dumps(entry, sort_keys=True, ensure_ascii=False))
    return 0


def load_manifest(path):
    with open(path, encoding="utf-8") as f:
        return {e["path"]: e for e in map(json.loads, f)}


def diff_manifests(a, b, ignore, label_a="before", label_b="after", limit=40):
    problems = []
    for path in sorted(set(a) | set(b)):
        if path not in b:
            problems.append(f"{path}: in {label_a}, missing in {label_b}")
            continue
        if path not in a:
            problems.append(f"{path}: in {label_b}, not in {label_a}")
            continue
        for key in sorted(set(a[path]) | set(b[path])):
            if key in ignore:
                continue
            va, vb = a[path].get(key), b[path].get(key)
            if va != vb:
                problems.append(f"{path}: {key}: {label_a} {va!r}, {label_b} {vb!r}")
    for line in problems[:limit]:
        print("  " + line, file=sys.stderr)
    if len(problems) > limit:
        print(f"  ... and {len(problems) - limit} more differences", file=sys.stderr)
    return problems


def cmd_compare(args):
    ignore = set(filter(None, args.ignore.split(",")))
    problems = diff_manifests(load_manifest(args.a), load_manifest(args.b), ignore)
    if problems:
        print(f"manifests differ ({len(problems)} differences)", file=sys.stderr)
        return 1
    print(f"manifests equal ({len(load_manifest(args.a))} entries)", file=sys.stderr)
    return 0


def cmd_tree_compare(args):
    """Two trees extracted from the same tar: same entries, types, modes, owners,
    sizes, mtimes (to the second: tar stores seconds), symlink targets, contents.
    Directory sizes, link counts, inode numbers and ctimes may differ."""
    a = {e["path"]: e for e in manifest(args.a)}
    b = {e["path"]: e for e in manifest(args.b)}
    for entries in (a, b):
        del entries["."]
        for e in entries.values():
            e["mtime_s"] = e.pop("mtime_ns") // 10**9
            e.pop("ctime_ns")
    problems = diff_manifests(a, b, ignore=set(), label_a="native", label_b="under test")
    if problems:
        print(f"trees differ ({len(problems)} differences)", file=sys.stderr)
        return 1
    kinds = {}
    for e in a.values():
        kinds[e["type"]] = kinds.get(e["type"], 0) + 1
    print(f"trees equal: {len(a)} entries {kinds}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------
# weft log --json

ISO_8601 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$")


def read_json(path):
    text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    return json.loads(text)


def log_problems(log):
    """What is wrong with a `weft log --json` object (empty list: nothing)."""
    problems = []
    if not isinstance(log, dict):
        return [f"expected a JSON object, got {type(log).__name__}"]
    for key in ("path", "node", "versions"):
        if key not in log:
            problems.append(f"missing key '{key}' (keys: {sorted(log)})")
    node = log.get("node")
    if "node" in log and not (isinstance(node, str) and re.fullmatch(r"[0-9a-f]{32}", node)):
        problems.append(f"node: expected 32 lowercase hex digits, got {node!r}")
    versions = log.get("versions")
    if "versions" in log and not isinstance(versions, list):
        problems.append(f"versions: expected a list, got {versions!r}")
        versions = []
    for i, v in enumerate(versions or []):
        if not isinstance(v, dict):
            problems.append(f"versions[{i}]: expected an object, got {v!r}")
            continue
        types = {"version": str, "time": str, "author": str, "size": int, "text": bool}
        for key, kind in types.items():
            if key not in v:
                problems.append(f"versions[{i}]: missing '{key}'")
            elif not isinstance(v[key], kind) or (kind is int and isinstance(v[key], bool)):
                problems.append(f"versions[{i}].{key}: expected {kind.__name__}, got {v[key]!r}")
        if isinstance(v.get("time"), str) and not ISO_8601.match(v["time"]):
            problems.append(f"versions[{i}].time: expected ISO-8601, got {v['time']!r}")
    # Newest first by version (its Lamport counter: "COUNTER.REPLICA"), not by
    # time: versions merged from other devices carry their authors' clocks.
    counters = [v.get("version", "").split(".")[0] for v in versions or [] if isinstance(v, dict)]
    if all(c.isdigit() for c in counters):
        numbers = [int(c) for c in counters]
        if numbers != sorted(numbers, reverse=True):
            problems.append(f"versions: expected newest first, got versions {counters}")
    return problems


def cmd_log_check(args):
    try:
        log = read_json(args.file)
    except (OSError, ValueError) as e:
        print(f"weft log --json: not JSON: {e}", file=sys.stderr)
        return 1
    problems = log_problems(log)
    for p in problems:
        print(f"weft log --json: {p}", file=sys.stderr)
    return 1 if problems else 0


def cmd_log_field(args):
    log = read_json(args.file)
    values = []
    for field in args.fields:
        value = log_field(log, field)
        if value is None:
            return 1
        values.append(json.dumps(value) if isinstance(value, bool) else str(value))
    print(" ".join(values))
    return 0


def log_field(log, field):
    if field == "node":
        value = log["node"]
    elif field == "count":
        value = len(log["versions"])
    elif field.startswith(("newest.", "oldest.")):
        which, key = field.split(".", 1)
        if not log["versions"]:
            print("weft log: no versions", file=sys.stderr)
            return None
        value = log["versions"][0 if which == "newest" else -1][key]
    elif field.startswith("size="):
        # the id of the newest version of that size
        size = int(field[5:])
        matches = [v["version"] for v in log["versions"] if v["size"] == size]
        if not matches:
            print(f"weft log: no version of size {size}", file=sys.stderr)
            return None
        value = matches[0]
    else:
        print(f"log-field: unknown field {field}", file=sys.stderr)
        return None
    return value


def cmd_json_check(args):
    try:
        read_json(args.file)
    except ValueError as e:
        print(f"not JSON: {e}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------
# writers and verifiers


def fsync_dir(path):
    fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def cmd_write_random(args):
    rng = random.Random(args.seed)
    digest = hashlib.sha256()
    fd = os.open(args.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(args.mib):
            block = rng.randbytes(1 << 20)
            digest.update(block)
            view = memoryview(block)
            while view:
                view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    print(digest.hexdigest())
    return 0


def cmd_sha256(args):
    """sha256 of a file or of stdin: OpenSSL's, several times faster than
    coreutils' sha256sum, which matters at 1 GiB under a sanitizer."""
    digest = hashlib.sha256()
    f = sys.stdin.buffer if args.path == "-" else open(args.path, "rb")
    with f:
        while True:
            block = f.read(1 << 20)
            if not block:
                break
            digest.update(block)
    print(digest.hexdigest())
    return 0


def cmd_write_sync(args):
    fd = os.open(args.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, args.text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(args.path)
    return 0


def cmd_hold_synced(args):
    fd = os.open(args.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, args.text.encode())
    os.fsync(fd)
    fsync_dir(args.path)
    with open(args.marker, "w") as f:
        f.write("synced\n")
    # Holds the file open (never closed: no last-close commit) until killed.
    time.sleep(300)
    return 0


def record(writer, seq, rng):
    payload = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(rng.randrange(8, 240)))
    body = f"{writer}:{seq:07d}:{payload}"
    return f"{body}:{zlib.crc32(body.encode()):08x}\n".encode()


def parse_records(data, what):
    """Splits data into (writer, seq) records; a record that does not parse or
    whose checksum is wrong is a torn or corrupt write."""
    out = []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        return out, f"{what}: last record has no newline (torn): {lines[-1][:60]!r}"
    for n, line in enumerate(lines):
        m = re.fullmatch(rb"([A-Za-z0-9]+):(\d{7}):([a-z0-9]*):([0-9a-f]{8})", line)
        if not m or int(m.group(4), 16) != zlib.crc32(line.rsplit(b":", 1)[0]):
            return out, f"{what}: record {n} is torn or corrupt: {line[:80]!r}"
        out.append((m.group(1).decode(), int(m.group(2))))
    return out, None


def cmd_append_writer(args):
    rng = random.Random(args.id)
    fd = os.open(args.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    total = 0
    try:
        for seq in range(args.count):
            rec = record(args.id, seq, rng)
            n = os.write(fd, rec)
            if n != len(rec):
                print(f"append-writer {args.id}: short write {n} of {len(rec)}", file=sys.stderr)
                return 1
            total += n
    finally:
        os.close(fd)
    print(total)
    return 0


def cmd_append_verify(args):
    with open(args.path, "rb") as f:
        data = f.read()
    expected_len = 0
    for writer in args.ids:
        rng = random.Random(writer)
        expected_len += sum(len(record(writer, seq, rng)) for seq in range(args.count))
    status = 0
    if len(data) != expected_len:
        print(f"append-verify: length: expected {expected_len}, got {len(data)}", file=sys.stderr)
        status = 1
    records, problem = parse_records(data, "append-verify")
    if problem:
        print(problem, file=sys.stderr)
        return 1
    for writer in args.ids:
        seqs = [s for w, s in records if w == writer]
        if seqs != list(range(args.count)):
            missing = sorted(set(range(args.count)) - set(seqs))[:10]
            print(
                f"append-verify: writer {writer}: expected records 0..{args.count - 1} in order, "
                f"got {len(seqs)} records (first missing: {missing})",
                file=sys.stderr,
            )
            status = 1
    interleavings = sum(1 for i in range(1, len(records)) if records[i][0] != records[i - 1][0])
    print(f"append-verify: {len(records)} records, {len(data)} bytes, writers switched {interleavings} times")
    return status


def cmd_acked_writer(args):
    rng = random.Random("acked")
    fd = os.open(args.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    ack = os.open(args.ackfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    fsync_dir(args.path)
    try:
        for seq in range(args.count):
            os.write(fd, record("acked", seq, rng))
            os.fsync(fd)
            os.write(ack, f"{seq}\n".encode())
    except OSError as e:
        # Expected once the daemon is killed: ENOTCONN.
        print(f"acked-writer: stopped at record {seq}: {e}", file=sys.stderr)
        return 0
    time.sleep(300)  # keep the file open, like a program that never closes it
    return 0


def cmd_acked_verify(args):
    with open(args.ackfile) as f:
        acks = [int(x) for x in f.read().split()]
    if not acks:
        print("acked-verify: nothing was acknowledged", file=sys.stderr)
        return 1
    last = acks[-1]
    rng = random.Random("acked")
    expected = b"".join(record("acked", seq, rng) for seq in range(last + 1))
    with open(args.path, "rb") as f:
        data = f.read()
    if data[: len(expected)] != expected:
        bad = next(
            (i for i in range(min(len(data), len(expected))) if data[i] != expected[i]),
            min(len(data), len(expected)),
        )
        print(
            f"acked-verify: records 0..{last} were fsync'ed ({len(expected)} bytes) but the file "
            f"({len(data)} bytes) differs from byte {bad}",
            file=sys.stderr,
        )
        return 1
    print(f"acked-verify: all {last + 1} fsync'ed records present; {len(data) - len(expected)} bytes after them")
    return 0


def cmd_dir_check(args):
    """DIR holds exactly PREFIX0 .. PREFIX{N-1} (each once), and nothing else."""
    names = os.listdir(args.dir)
    expected = {f"{args.prefix}{i}" for i in range(args.start, args.start + args.count)}
    status = 0
    if len(names) != len(set(names)):
        dups = sorted(n for n in set(names) if names.count(n) > 1)[:5]
        print(f"dir-check {args.dir}: readdir returned duplicates, e.g. {dups}", file=sys.stderr)
        status = 1
    missing, extra = sorted(expected - set(names)), sorted(set(names) - expected)
    if missing or extra:
        print(
            f"dir-check {args.dir}: expected {len(expected)} entries {args.prefix}N, got {len(names)}; "
            f"missing {len(missing)} (e.g. {missing[:5]}), unexpected {len(extra)} (e.g. {extra[:5]})",
            file=sys.stderr,
        )
        status = 1
    return status


def cmd_atomic_save(args):
    """How glib, LibreOffice and most libraries save: a temp file with a random
    name in the same directory, written and fsync'ed, renamed over the
    original, then the directory fsync'ed."""
    import tempfile

    directory = os.path.dirname(os.path.abspath(args.path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(args.path) + ".")
    try:
        os.write(fd, args.text.encode())
        os.fsync(fd)
        os.fchmod(fd, 0o644)
    finally:
        os.close(fd)
    os.replace(tmp, args.path)
    fsync_dir(args.path)
    return 0


def cmd_scandir_unlink(args):
    """Unlinks each entry right after readdir returns it. Entries not yet
    returned are not touched, so POSIX says each is returned exactly once:
    one pass must empty the directory."""
    removed = 0
    with os.scandir(args.dir) as it:
        for entry in it:
            os.unlink(entry.path)
            removed += 1
    left = os.listdir(args.dir)
    print(removed)
    if left:
        print(
            f"scandir-unlink: readdir interleaved with unlink skipped entries: "
            f"{len(left)} left, e.g. {sorted(left)[:5]}",
            file=sys.stderr,
        )
        return 1
    return 0


# --------------------------------------------------------------------------


def main():
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("gen-tar")
    p.add_argument("out")
    p.add_argument("--files", type=int, default=5000)
    p.add_argument("--seed", type=int, default=6)
    p.set_defaults(fn=cmd_gen_tar)

    p = sub.add_parser("manifest")
    p.add_argument("root")
    p.add_argument("--inodes", action="store_true")
    p.add_argument("--no-hash", action="store_true")
    p.set_defaults(fn=cmd_manifest)

    p = sub.add_parser("compare")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--ignore", default="")
    p.set_defaults(fn=cmd_compare)

    p = sub.add_parser("tree-compare")
    p.add_argument("a")
    p.add_argument("b")
    p.set_defaults(fn=cmd_tree_compare)

    for name, fn in (("log-check", cmd_log_check), ("json-check", cmd_json_check)):
        p = sub.add_parser(name)
        p.add_argument("file")
        p.set_defaults(fn=fn)

    p = sub.add_parser("log-field")
    p.add_argument("file")
    p.add_argument("fields", nargs="+")
    p.set_defaults(fn=cmd_log_field)

    p = sub.add_parser("write-random")
    p.add_argument("path")
    p.add_argument("mib", type=int)
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(fn=cmd_write_random)

    p = sub.add_parser("sha256")
    p.add_argument("path")
    p.set_defaults(fn=cmd_sha256)

    p = sub.add_parser("write-sync")
    p.add_argument("path")
    p.add_argument("text")
    p.set_defaults(fn=cmd_write_sync)

    p = sub.add_parser("hold-synced")
    p.add_argument("path")
    p.add_argument("text")
    p.add_argument("marker")
    p.set_defaults(fn=cmd_hold_synced)

    p = sub.add_parser("acked-writer")
    p.add_argument("path")
    p.add_argument("ackfile")
    p.add_argument("count", type=int)
    p.set_defaults(fn=cmd_acked_writer)

    p = sub.add_parser("acked-verify")
    p.add_argument("path")
    p.add_argument("ackfile")
    p.set_defaults(fn=cmd_acked_verify)

    p = sub.add_parser("append-writer")
    p.add_argument("path")
    p.add_argument("id")
    p.add_argument("count", type=int)
    p.set_defaults(fn=cmd_append_writer)

    p = sub.add_parser("append-verify")
    p.add_argument("path")
    p.add_argument("count", type=int)
    p.add_argument("ids", nargs="+")
    p.set_defaults(fn=cmd_append_verify)

    p = sub.add_parser("scandir-unlink")
    p.add_argument("dir")
    p.set_defaults(fn=cmd_scandir_unlink)

    p = sub.add_parser("dir-check")
    p.add_argument("dir")
    p.add_argument("prefix")
    p.add_argument("count", type=int)
    p.add_argument("--start", type=int, default=0)
    p.set_defaults(fn=cmd_dir_check)

    p = sub.add_parser("atomic-save")
    p.add_argument("path")
    p.add_argument("text")
    p.set_defaults(fn=cmd_atomic_save)

    args = parser.parse_args()
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
