#!/usr/bin/env python3
"""The Python helper of tests/bench/sync-bench: what needs a tight loop, a
clock or a socket. Every command prints its result on stdout (a number or
one JSON object) and its progress on stderr. Run by sync-bench, not by hand.

  free-ports N                          N free TCP ports on 127.0.0.1
  proxy CONTROL ROUTE...                TCP forwarders that count bytes (below)
  wire CONTROL                          the proxy's counters: {label: {up, down, conns}}
  wire-quiet CONTROL LABELS QUIET MAX   until the labels' links carried nothing for QUIET s
  small SRC DST N TIMEOUT               N small files written in SRC one at a time,
                                        each waited for in DST (1 ms polls):
                                        {"ms": [...], "p50": x, "p95": y}
  many SRC DST N TIMEOUT                N files of 1 KiB (100 per directory) written
                                        in SRC: {"write_s": w, "total_s": t}
  put-big SRC DST MIB SEED TIMEOUT      a MIB MiB random file in SRC, waited for in DST
  put-text SRC DST KB SEED TIMEOUT      a KB kB text file in SRC, waited for in DST
  edit byte|text SRC DST OFFSET CONTROL LABELS TIMEOUT
                                        one byte changed in place (byte) or one
                                        character changed and saved by
                                        temp-and-rename (text); waits for DST to
                                        show it, then for the wire to go quiet:
                                        {"s": t, "wire": {label: bytes}, "equal": b}
  fill DIR BYTES SEED                   incompressible files (64 MiB each) adding up to BYTES
  du DIR                                bytes of the regular files under DIR
  manifest DIR                          one digest of DIR's tree (names, types, contents)
  wait-manifest DIR DIGEST TIMEOUT      polls until manifest DIR is DIGEST: when the check
                                        that found it equal started (0: the first), or null
  wire-total COUNTERS LABEL             up + down of LABEL in the output of wire
  st-config HOME OPTIONS...             rewrites a Syncthing config.xml (see cmd_st_config)
  st GET|POST|PUT|PATCH URL KEY PATH [JSON]   one REST call, the answer on stdout
  st-wait-up URL KEY TIMEOUT            until the REST API answers
  st-wait-connected URL KEY DEVICE TIMEOUT
  st-wait-synced URL KEY FOLDER BYTES FILES TIMEOUT
                                        until the folder holds BYTES in FILES files,
                                        is idle and needs nothing: seconds or null

Proxy routes are LISTEN_PORT:TARGET_PORT:LABEL. The label '@' names each
connection by the environment variable SYNC_BENCH_DEV of the process that
opened it (found from the socket's inode in /proc), so one relay port serves
several devices and each device's bytes are counted apart. Bytes are TCP
payload bytes: what the programs wrote, headers of the TCP/IP stack not
included. "up" is client to server, "down" server to client.
"""

import hashlib
import json
import os
import random
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

IGNORED = {".stfolder", ".stignore", ".stversions"}


def log(*args):
    print("sync-bench:", *args, file=sys.stderr, flush=True)


def now():
    return time.perf_counter()


# ---------------------------------------------------------------------------
# ports and the counting proxy


def cmd_free_ports(n):
    socks = []
    for _ in range(int(n)):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))
    for s in socks:
        s.close()


def socket_pid(client_port, server_port):
    """The pid of the process holding the client end 127.0.0.1:client_port of a
    connection to server_port, or None."""
    want_local = "0100007F:%04X" % client_port
    want_remote = "0100007F:%04X" % server_port
    inode = None
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                p = line.split()
                if p[1] == want_local and p[2] == want_remote:
                    inode = p[9]
                    break
    except OSError:
        return None
    if not inode or inode == "0":
        return None
    target = "socket:[%s]" % inode
    me = str(os.getpid())
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or pid == me:
            continue
        try:
            fds = os.listdir("/proc/%s/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink("/proc/%s/fd/%s" % (pid, fd)) == target:
                    return int(pid)
            except OSError:
                pass
    return None


def process_label(pid):
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            for var in f.read().split(b"\0"):
                if var.startswith(b"SYNC_BENCH_DEV="):
                    return var.split(b"=", 1)[1].decode()
    except OSError:
        pass
    return "?"


class Proxy:
    def __init__(self):
        self.lock = threading.Lock()
        self.conns = []

    def totals(self):
        out = {}
        with self.lock:
            for c in self.conns:
                t = out.setdefault(c["label"], {"up": 0, "down": 0, "conns": 0})
                t["up"] += c["up"]
                t["down"] += c["down"]
                t["conns"] += 1
        return out

    def pump(self, conn, src, dst, key, done):
        buf = bytearray(256 * 1024)
        view = memoryview(buf)
        try:
            while True:
                n = src.recv_into(buf)
                if n == 0:
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    break
                dst.sendall(view[:n])
                with self.lock:
                    conn[key] += n
        except OSError:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if done.acquire(blocking=False):
            return  # the other direction closes both
        src.close()
        dst.close()

    def serve(self, listener, lport, tport, label):
        while True:
            client, addr = listener.accept()
            try:
                server = socket.create_connection(("127.0.0.1", tport))
            except OSError as e:
                log("proxy: cannot reach port %d: %s" % (tport, e))
                client.close()
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = {"label": label if label != "@" else "?", "up": 0, "down": 0}
            with self.lock:
                self.conns.append(conn)
            if label == "@":
                threading.Thread(target=self.resolve, args=(conn, addr[1], lport), daemon=True).start()
            done = threading.Semaphore(1)
            threading.Thread(target=self.pump, args=(conn, client, server, "up", done), daemon=True).start()
            threading.Thread(target=self.pump, args=(conn, server, client, "down", done), daemon=True).start()

    def resolve(self, conn, cport, lport):
        for _ in range(50):
            pid = socket_pid(cport, lport)
            if pid:
                label = process_label(pid)
                with self.lock:
                    conn["label"] = label
                return
            time.sleep(0.01)

    def control(self, path):
        if os.path.exists(path):
            os.unlink(path)
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(16)
        while True:
            c, _ = srv.accept()
            try:
                c.sendall(json.dumps(self.totals()).encode())
            except OSError:
                pass
            c.close()


def cmd_proxy(control, *routes):
    proxy = Proxy()
    for route in routes:
        lport, tport, label = route.split(":", 2)
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", int(lport)))
        listener.listen(64)
        threading.Thread(target=proxy.serve, args=(listener, int(lport), int(tport), label),
                         daemon=True).start()
    ready = control + ".ready"
    threading.Thread(target=proxy.control, args=(control,), daemon=True).start()
    while not os.path.exists(control):
        time.sleep(0.01)
    open(ready, "w").close()
    while True:
        time.sleep(3600)


def wire(control):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(control)
    data = b""
    while True:
        part = s.recv(65536)
        if not part:
            break
        data += part
    s.close()
    return json.loads(data)


def cmd_wire(control):
    print(json.dumps(wire(control)))


def wire_bytes(counters, labels):
    return {l: counters.get(l, {}).get("up", 0) + counters.get(l, {}).get("down", 0) for l in labels}


# ---------------------------------------------------------------------------
# workloads


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def write_file(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    finally:
        os.close(fd)


def percentile(values, p):
    """Nearest-rank percentile."""
    v = sorted(values)
    k = max(0, min(len(v) - 1, -(-len(v) * p // 100) - 1))
    return v[int(k)]


def cmd_small(src, dst, n, timeout):
    n, timeout = int(n), float(timeout)
    lat = []
    for i in range(n):
        name = "f%03d.txt" % i
        data = ("small file %d of sync-bench, written at %.6f\n" % (i, time.time()) * 3).encode()
        t0 = now()
        write_file(os.path.join(src, name), data)
        target = os.path.join(dst, name)
        got = None
        while True:
            try:
                if read_file(target) == data:
                    got = now() - t0
                    break
            except OSError:
                pass
            if now() - t0 > timeout:
                break
            time.sleep(0.001)
        if got is None:
            log("small file %d did not reach %s within %g s: stopping" % (i, dst, timeout))
            break
        lat.append(got * 1000)
        if (i + 1) % 10 == 0 or i == 0:
            log("small file %d/%d: %.1f ms" % (i + 1, n, got * 1000))
        time.sleep(0.1)
    done = len(lat) == n
    print(json.dumps({"ms": [round(x, 2) for x in lat], "arrived": len(lat),
                      "p50": round(percentile(lat, 50), 2) if done else None,
                      "p95": round(percentile(lat, 95), 2) if done else None}))


def many_content(i):
    head = "file %05d of sync-bench's many-files workload\n" % i
    line = "the quick brown fox jumps over the lazy dog %05d\n" % i
    body = head + line * (1024 // len(line) + 1)
    return body[:1023].encode() + b"\n"


def cmd_many(src, dst, n, timeout):
    n, timeout = int(n), float(timeout)
    names = ["d%03d/f%05d.txt" % (i // 100, i) for i in range(n)]
    contents = [many_content(i) for i in range(n)]
    t0 = now()
    for i in range(n):
        if i % 100 == 0:
            os.mkdir(os.path.join(src, "d%03d" % (i // 100)))
            if now() - t0 > timeout:
                log("many: only %d files written in %g s: giving up" % (i, timeout))
                print(json.dumps({"write_s": None, "total_s": None, "arrived": 0}))
                return
        write_file(os.path.join(src, names[i]), contents[i])
    write_s = now() - t0
    log("many: %d files written in %.2f s; waiting for them in %s" % (n, write_s, dst))
    remaining = {}
    for i in range(n):
        remaining.setdefault("d%03d" % (i // 100), set()).add(i)
    last_log = now()
    while remaining and now() - t0 <= timeout:
        for d in list(remaining):
            try:
                present = set(os.listdir(os.path.join(dst, d)))
            except OSError:
                continue
            for i in list(remaining[d]):
                if names[i].split("/")[1] in present:
                    try:
                        if read_file(os.path.join(dst, names[i])) == contents[i]:
                            remaining[d].discard(i)
                    except OSError:
                        pass
            if not remaining[d]:
                del remaining[d]
        if now() - last_log > 5:
            left = sum(len(s) for s in remaining.values())
            log("many: %d of %d arrived after %.1f s" % (n - left, n, now() - t0))
            last_log = now()
        if remaining:
            time.sleep(0.1)  # B's daemon serves these listings too: do not crowd it
    total = now() - t0
    left = sum(len(s) for s in remaining.values())
    if left:
        log("many: %d of %d files still missing in %s after %g s" % (left, n, dst, timeout))
    print(json.dumps({"write_s": round(write_s, 3), "total_s": None if left else round(total, 3),
                      "arrived": n - left}))


def digest_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def wait_same_file(src, dst, t0, timeout):
    """Polls until dst has src's size, then content; the time since t0 or None."""
    size = os.stat(src).st_size
    want = None
    while now() - t0 <= timeout:
        try:
            if os.stat(dst).st_size == size:
                if want is None:
                    want = digest_file(src)
                if digest_file(dst) == want:
                    return now() - t0
        except OSError:
            pass
        time.sleep(0.01)
    return None


def cmd_put_big(src, dst, mib, seed, timeout):
    rng = random.Random(int(seed))
    t0 = now()
    fd = os.open(src, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for _ in range(int(mib)):
        view = memoryview(rng.randbytes(1 << 20))
        while view:
            view = view[os.write(fd, view):]
    os.close(fd)
    write_s = now() - t0
    total = wait_same_file(src, dst, t0, float(timeout))
    print(json.dumps({"write_s": round(write_s, 3), "total_s": None if total is None else round(total, 3)}))


WORDS = ("the of and to in is that for it as with was on be by this are from at or an have not "
         "which but all were when we there can more if will one about up out has do their time "
         "file sync merge relay device share mount text chunk record version replica").split()


def text_content(kb, seed):
    rng = random.Random(int(seed))
    lines, size, target = [], 0, int(kb) * 1000
    while size < target:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) + ".\n"
        lines.append(line)
        size += len(line)
    return "".join(lines).encode()[:target - 1] + b"\n"


def cmd_put_text(src, dst, kb, seed, timeout):
    t0 = now()
    write_file(src, text_content(kb, seed))
    write_s = now() - t0
    total = wait_same_file(src, dst, t0, float(timeout))
    print(json.dumps({"write_s": round(write_s, 3), "total_s": None if total is None else round(total, 3)}))


def wait_quiet(control, labels, quiet_s=2.0, max_s=30.0):
    """Waits until the labels' byte counts stay unchanged for quiet_s."""
    start = now()
    last = wire_bytes(wire(control), labels)
    since = now()
    while now() - start < max_s:
        time.sleep(0.25)
        cur = wire_bytes(wire(control), labels)
        if cur != last:
            last, since = cur, now()
        elif now() - since >= quiet_s:
            break
    return last


def cmd_wire_quiet(control, labels, quiet_s, max_s):
    t0 = now()
    wait_quiet(control, labels.split(","), float(quiet_s), float(max_s))
    print(round(now() - t0, 3))


def cmd_edit(kind, src, dst, offset, control, labels, timeout):
    offset, timeout, labels = int(offset), float(timeout), labels.split(",")
    before_detail = wire(control)
    if kind == "byte":
        with open(src, "rb") as f:
            f.seek(offset)
            old = f.read(1)[0]
        new = old ^ 0x5A
        t0 = now()
        fd = os.open(src, os.O_WRONLY)
        os.pwrite(fd, bytes([new]), offset)
        os.close(fd)
    else:
        data = bytearray(read_file(src))
        while not chr(data[offset]).isalpha():
            offset += 1
        old = data[offset]
        new = ord("X") if old != ord("X") else ord("Y")
        data[offset] = new
        tmp = os.path.join(os.path.dirname(src), "." + os.path.basename(src) + ".sbtmp")
        t0 = now()
        write_file(tmp, bytes(data))
        os.rename(tmp, src)
    got = None
    while now() - t0 <= timeout:
        try:
            fd = os.open(dst, os.O_RDONLY)
            try:
                if os.pread(fd, 1, offset) == bytes([new]):
                    got = now() - t0
                    break
            finally:
                os.close(fd)
        except OSError:
            pass
        time.sleep(0.001)
    wait_quiet(control, labels)
    after = wire(control)
    equal = got is not None and wait_same_file(src, dst, now(), 30) is not None
    detail = {l: {d: after.get(l, {}).get(d, 0) - before_detail.get(l, {}).get(d, 0) for d in ("up", "down")}
              for l in labels}
    print(json.dumps({"s": None if got is None else round(got, 4),
                      "wire": {l: detail[l]["up"] + detail[l]["down"] for l in labels},
                      "detail": detail, "equal": equal}))


def cmd_fill(d, total, seed):
    total, rng = int(total), random.Random(int(seed))
    os.makedirs(d, exist_ok=True)
    i = 0
    while total > 0:
        size = min(total, 64 << 20)
        with open(os.path.join(d, "fill-%03d.bin" % i), "wb") as f:
            left = size
            while left:
                n = min(left, 1 << 20)
                f.write(rng.randbytes(n))
                left -= n
        total -= size
        i += 1


def walk(top):
    for root, dirs, files in os.walk(top):
        rel = os.path.relpath(root, top)
        dirs[:] = sorted(d for d in dirs if not (rel == "." and d in IGNORED))
        for name in sorted(files):
            if rel == "." and name in IGNORED:
                continue
            yield os.path.normpath(os.path.join(rel, name))
        for name in dirs:
            yield os.path.normpath(os.path.join(rel, name)) + "/"


def cmd_du(top):
    print(sum(os.lstat(os.path.join(top, p)).st_size for p in walk(top) if not p.endswith("/")))


def manifest(top):
    h = hashlib.sha256()
    for p in sorted(walk(top)):
        h.update(p.encode() + b"\0")
        if not p.endswith("/"):
            h.update(digest_file(os.path.join(top, p)).encode())
    return h.hexdigest()


def cmd_manifest(top):
    print(manifest(top))


def cmd_wait_manifest(top, want, timeout):
    """Prints when the check that found DIR equal started (0 if the first one
    did), in seconds since this command started, or null."""
    t0 = now()
    first = True
    while now() - t0 <= float(timeout):
        start = now()
        try:
            if manifest(top) == want:
                print(0 if first else round(start - t0, 3))
                return
        except OSError:
            pass
        first = False
        time.sleep(0.2)
    print("null")


def cmd_wire_total(counters, label):
    c = json.loads(counters).get(label, {})
    print(c.get("up", 0) + c.get("down", 0))


# ---------------------------------------------------------------------------
# Syncthing


def cmd_st_config(home, *opts):
    """st-config HOME listen=PORT gui=PORT apikey=KEY name=NAME
    device=ID,NAME,ADDRESS... folder=ID,PATH,DELAY share=ID..."""
    path = os.path.join(home, "config.xml")
    tree = ET.parse(path)
    root = tree.getroot()
    kv = [o.split("=", 1) for o in opts]
    options = root.find("options")

    def setopt(name, value):
        el = options.find(name)
        if el is None:
            el = ET.SubElement(options, name)
        el.text = value

    for name, value in {"globalAnnounceEnabled": "false", "localAnnounceEnabled": "false",
                        "relaysEnabled": "false", "natEnabled": "false", "urAccepted": "-1",
                        "autoUpgradeIntervalH": "0", "crashReportingEnabled": "false",
                        "startBrowser": "false", "setLowPriority": "false"}.items():
        setopt(name, value)
    defaults = root.find("defaults")
    folder = None
    shares = []
    for k, v in kv:
        if k == "listen":
            setopt("listenAddress", "tcp://127.0.0.1:%s" % v)
        elif k == "gui":
            root.find("gui").find("address").text = "127.0.0.1:%s" % v
        elif k == "apikey":
            root.find("gui").find("apikey").text = v
        elif k == "name":
            root.find("device").set("name", v)
        elif k == "device":
            dev_id, name, address = v.split(",", 2)
            dev = ET.fromstring(ET.tostring(defaults.find("device")))
            dev.set("id", dev_id)
            dev.set("name", name)
            dev.find("address").text = address
            root.insert(list(root).index(root.find("gui")), dev)
        elif k == "folder":
            folder = v.split(",", 2)
        elif k == "share":
            shares.append(v)
    if folder:
        fid, fpath, delay = folder
        el = ET.fromstring(ET.tostring(defaults.find("folder")))
        el.set("id", fid)
        el.set("label", fid)
        el.set("path", fpath)
        el.set("fsWatcherEnabled", "true")
        el.set("fsWatcherDelayS", delay)
        for old in el.findall("device"):
            el.remove(old)
        for i, dev_id in enumerate(shares):
            d = ET.Element("device", {"id": dev_id, "introducedBy": ""})
            ET.SubElement(d, "encryptionPassword").text = ""
            el.insert(i, d)
        root.insert(0, el)
    tree.write(path)


def rest(method, url, key, path, body=None, timeout=30):
    data = None if body is None else (body if isinstance(body, bytes) else body.encode())
    req = urllib.request.Request(url + path, data=data, method=method,
                                 headers={"X-API-Key": key, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read().decode()


def cmd_st(method, url, key, path, body=None):
    print(rest(method, url, key, path, body))


def cmd_st_wait_up(url, key, timeout):
    t0 = now()
    while now() - t0 <= float(timeout):
        try:
            rest("GET", url, key, "/rest/system/ping", timeout=5)
            return
        except (OSError, urllib.error.URLError):
            time.sleep(0.05)
    sys.exit("syncthing at %s did not answer within %s s" % (url, timeout))


def cmd_st_wait_connected(url, key, device, timeout):
    t0 = now()
    while now() - t0 <= float(timeout):
        try:
            c = json.loads(rest("GET", url, key, "/rest/system/connections", timeout=5))
            if c.get("connections", {}).get(device, {}).get("connected"):
                return
        except (OSError, urllib.error.URLError, ValueError):
            pass
        time.sleep(0.1)
    sys.exit("syncthing at %s did not connect to %s within %s s" % (url, device, timeout))


def cmd_st_wait_synced(url, key, folder, nbytes, nfiles, timeout):
    t0 = now()
    last = None
    while now() - t0 <= float(timeout):
        try:
            s = json.loads(rest("GET", url, key, "/rest/db/status?folder=" + folder, timeout=5))
            last = s
            if (s.get("state") == "idle" and s.get("needTotalItems", 1) == 0
                    and s.get("localBytes") == int(nbytes) and s.get("localFiles") == int(nfiles)):
                print(round(now() - t0, 3))
                return
        except (OSError, urllib.error.URLError, ValueError):
            pass
        time.sleep(0.05)
    log("syncthing at %s: folder %s not synced within %s s; last status %s" % (url, folder, timeout, last))
    print("null")


COMMANDS = {
    "free-ports": cmd_free_ports, "proxy": cmd_proxy, "wire": cmd_wire, "small": cmd_small,
    "many": cmd_many, "put-big": cmd_put_big, "put-text": cmd_put_text, "edit": cmd_edit,
    "wire-total": cmd_wire_total, "wire-quiet": cmd_wire_quiet, "fill": cmd_fill, "du": cmd_du,
    "manifest": cmd_manifest, "wait-manifest": cmd_wait_manifest,
    "st-config": cmd_st_config, "st": cmd_st, "st-wait-up": cmd_st_wait_up,
    "st-wait-connected": cmd_st_wait_connected, "st-wait-synced": cmd_st_wait_synced,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]](*sys.argv[2:])
