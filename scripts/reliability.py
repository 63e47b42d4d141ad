"""The reliability campaign's harness (issue 20; docs/RELIABILITY.md): a nats-server, the
ledger's `serve` and a steady publisher, each started on 127.0.0.1 and stopped again, and
the checks every run ends with. Run through the scripts beside it:

  scripts/crash-loop BINARY [KILLS=200] [SEED=1]
  scripts/nats-faults BINARY [SEED=1]
  scripts/disk-faults BINARY
  scripts/soak BINARY [MINUTES=30] [EVENTS_PER_SECOND=300]

Each prints its figures and exits 1 when a promise was broken (an acknowledged event
lost, a payout published twice with different content, a final digest other than a clean
replay's). Only the standard library: the scripts must run on a fresh machine.
"""
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

TOKEN = "reliability-finance"

# Events per fault case (the fast subsets in the test suite set fewer).
CASE_EVENTS = int(os.environ.get("RELIABILITY_EVENTS", "24000"))


def work_root():
    """Where a run keeps its streams, data directories and logs: a temporary directory
    removed at the end, or, with RELIABILITY_KEEP=DIR, that directory, kept for a look
    at what happened (the service's log is `serve.log` in each case's directory)."""
    keep = os.environ.get("RELIABILITY_KEEP")
    if keep:
        os.makedirs(keep, exist_ok=True)
        return _Kept(keep)
    return tempfile.TemporaryDirectory()


class _Kept:
    def __init__(self, path):
        self.path = path

    def __enter__(self):
        return self.path

    def __exit__(self, *exc):
        print(f"kept: {self.path}", file=sys.stderr)
        return False


def die_with_parent():
    """Run in each child before it starts: it is killed when this script dies, however
    it dies (a test that runs the script may be stopped at its time limit)."""
    import ctypes
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until(what, predicate, timeout=60.0, every=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise GaveUp(f"gave up after {timeout:.0f} s waiting for {what}")


class GaveUp(Exception):
    """A wait that ran out: the run goes on to its next case, and fails at the end."""


def end(proc, sig, wait):
    """Sends `sig` to a running `proc` and reaps it; SIGKILL after `wait` seconds."""
    if proc and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Nats:
    """A JetStream nats-server on a free port with its store under `work`."""

    def __init__(self, work, args=()):
        self.work = work
        self.port = free_port()
        self.store = os.path.join(work, "js")
        self.args = list(args)
        self.proc = None
        self.start()

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    def start(self):
        log = open(os.path.join(self.work, "nats.log"), "ab")
        self.proc = subprocess.Popen(
            ["nats-server", "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", self.store] + self.args,
            stdout=log, stderr=log, preexec_fn=die_with_parent)
        wait_until("nats-server", self.answers, 20)

    def answers(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), 0.5).close()
            return True
        except OSError:
            return False

    def stop(self, sig=signal.SIGTERM):
        end(self.proc, sig, 20)
        self.proc = None

    def _connect(self, inbox, timeout):
        """A plain NATS connection subscribed to `inbox` (the protocol is a few lines of
        text; no client library is needed for it)."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout)
        f = s.makefile("rb")
        f.readline()  # INFO
        s.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":false}\r\n'
                  + f"SUB {inbox} 1\r\n".encode())
        return s, f

    @staticmethod
    def _reply(s, f):
        """The JSON body of the next message on the connection."""
        while True:
            line = f.readline()
            if not line:
                raise OSError("connection closed")
            if line.startswith(b"PING"):
                s.sendall(b"PONG\r\n")
            elif line.startswith(b"MSG"):
                size = int(line.split()[-1])
                return json.loads(f.read(size + 2)[:size])
            elif line.startswith(b"-ERR"):
                raise OSError(line.decode().strip())

    def request(self, subject, payload=b"", timeout=5.0):
        """One request/reply."""
        inbox = "_INBOX.reliability"
        s, f = self._connect(inbox, timeout)
        with s:
            s.sendall(f"PUB {subject} {inbox} {len(payload)}\r\n".encode() + payload + b"\r\n")
            return self._reply(s, f)

    def stream_messages(self, stream):
        """The payload of every message `stream` holds, in its order: one direct get per
        sequence on one connection."""
        import base64
        state = self.request(f"$JS.API.STREAM.INFO.{stream}")["state"]
        out = []
        inbox = "_INBOX.messages"
        s, f = self._connect(inbox, 10)
        with s:
            for seq in range(state["first_seq"], state["last_seq"] + 1):
                body = json.dumps({"seq": seq}).encode()
                s.sendall(f"PUB $JS.API.STREAM.MSG.GET.{stream} {inbox} {len(body)}\r\n".encode()
                          + body + b"\r\n")
                reply = self._reply(s, f)
                if "message" in reply:  # a deleted sequence has none
                    out.append(base64.b64decode(reply["message"].get("data", "")))
        return out

    def ack_floor(self, stream, consumer):
        """The consumer's acknowledgement floor: every stream sequence at or below it was
        acknowledged by the ledger."""
        info = self.request(f"$JS.API.CONSUMER.INFO.{stream}.{consumer}")
        if "error" in info:
            return None
        return info["ack_floor"]["stream_seq"]


class Service:
    """`serve` with an HTTP port and a finance token; stderr appended to `serve.log`."""

    def __init__(self, binary, work, nats, extra=(), env=None, data=None):
        self.binary = binary
        self.work = work
        self.nats = nats
        self.http = free_port()
        self.data = data or os.path.join(work, "data")
        self.extra = list(extra)
        self.env = env
        self.log_path = os.path.join(work, "serve.log")
        self.config = os.path.join(work, "ledger.toml")
        with open(self.config, "w") as f:
            f.write(f'http_addr = "127.0.0.1:{self.http}"\n[[auth.tokens]]\n'
                    f'token = "{TOKEN}"\nrole = "finance"\n')
        self.proc = None
        self.log_offset = 0

    def start(self):
        self.log_offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        log = open(self.log_path, "ab")
        env = dict(os.environ, NO_COLOR="1", RUST_LOG=os.environ.get("RUST_LOG", "info"))
        env.update(self.env or {})
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--config", self.config, "--nats-url", self.nats.url,
             "--data-dir", self.data] + self.extra, stdout=log, stderr=log, env=env,
            preexec_fn=die_with_parent)
        return self

    def kill(self, sig=signal.SIGKILL):
        end(self.proc, sig, 60)
        self.proc = None

    def this_run_log(self):
        with open(self.log_path, "rb") as f:
            f.seek(self.log_offset)
            return f.read().decode(errors="replace")

    def get(self, path, timeout=3.0):
        req = urllib.request.Request(f"http://127.0.0.1:{self.http}{path}",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                return e.code, json.loads(body)
            except ValueError:
                return e.code, body.decode(errors="replace")
        except (OSError, ValueError):
            return None, None

    def status(self):
        code, body = self.get("/v1/status")
        return body if code == 200 else None

    def ready(self):
        code, body = self.get("/health/ready")
        return code, body

    def resume_after(self):
        """The stream position this run resumed after (its log's source position), once
        it has reached its consumer."""
        m = re.search(r"consuming.*?resume_after=(\d+)", self.this_run_log())
        return int(m.group(1)) if m else None

    def consumer(self):
        m = re.search(r"consuming.*?consumer=(\S+)", self.this_run_log())
        return m.group(1) if m else None


class Publisher(threading.Thread):
    """Publishes `events` (NDJSON lines) with the ledger's own `publish` in chunks at a
    steady rate, retrying a chunk the broker refused (its ids deduplicate a re-send)."""

    def __init__(self, binary, work, nats, lines, rate, chunk=100):
        super().__init__(daemon=True)
        self.binary, self.work, self.nats = binary, work, nats
        self.lines, self.rate, self.chunk = lines, rate, chunk
        self.sent = 0
        self.retries = 0
        self.stopped = threading.Event()

    def run(self):
        path = os.path.join(self.work, "chunk.ndjson")
        started = time.monotonic()
        for at in range(0, len(self.lines), self.chunk):
            if self.stopped.is_set():
                return
            with open(path, "w") as f:
                f.write("\n".join(self.lines[at:at + self.chunk]) + "\n")
            for _ in range(600):
                r = subprocess.run([self.binary, "publish", "--nats-url", self.nats.url, "--events", path],
                                   capture_output=True)
                if r.returncode == 0:
                    break
                self.retries += 1
                time.sleep(0.5)
            else:
                raise SystemExit("a chunk could not be published for 5 minutes")
            self.sent = at + len(self.lines[at:at + self.chunk])
            ahead = self.sent / self.rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)


def replay_document(binary, events_path):
    out = subprocess.run([binary, "replay", "--events", events_path, "--compact"],
                         capture_output=True, check=True)
    return json.loads(out.stdout)


INTAKE_CODES = {"too_large", "malformed_json", "invalid_envelope", "unknown_type", "invalid_data",
                "duplicate_conflict"}


def positions(doc):
    """Log positions a document's events take: applied events and business refusals."""
    return doc["events"]["applied"] + sum(1 for r in doc["rejected"] if r["code"] not in INTAKE_CODES)


def stream_payouts(binary, nats):
    """The payout.issued messages the payout stream holds, in its order."""
    out = subprocess.run([binary, "payouts", "--nats-url", nats.url], capture_output=True, check=True)
    return [json.loads(line) for line in out.stdout.decode().splitlines()]


def tally(messages, doc):
    """Payout messages against the document: (distinct ids, ids published more than once
    with the same content, ids published with different content, ids missing,
    unexpected or different from the replay)."""
    seen, same, different = {}, 0, 0
    for m in messages:
        pid = m["id"]
        if pid in seen:
            if seen[pid] == m["data"]:
                same += 1
            else:
                different += 1
            continue
        seen[pid] = m["data"]
    expected = {p["payout_id"]: p for p in doc["payouts"]}
    wrong = sum(1 for pid in expected if seen.get(pid) != expected[pid]) + sum(1 for pid in seen if pid not in expected)
    return len(seen), same, different, wrong


def settle(service, doc, timeout=300):
    """Waits until the service has folded every position of `doc`, drained its outbox and
    computed the digest of that position; returns its status."""
    want = positions(doc)

    def done():
        s = service.status()
        if s and s["position"] == want and s["outbox_backlog"] == 0 and s.get("digest_position") == want:
            return s
        return None
    return wait_until(f"the service to reach position {want}", done, timeout, 0.5)


class Figures:
    """Named figures, printed at the end; `broken` ones make the run fail."""

    def __init__(self):
        self.rows = []
        self.failed = False
        self.prefix = ""

    def add(self, name, value, must=None):
        ok = must is None or value == must
        self.failed |= not ok
        self.rows.append((self.prefix + name, value, "" if ok else f"   <-- must be {must}"))

    def show(self):
        width = max(len(n) for n, _, _ in self.rows)
        for name, value, flag in self.rows:
            print(f"  {name:<{width}}  {value}{flag}")
        return 1 if self.failed else 0


def generated(binary, work, events, seed, partners=400):
    path = os.path.join(work, "all.ndjson")
    with open(path, "wb") as f:
        subprocess.run([binary, "generate", "--events", str(events), "--seed", str(seed),
                        "--partners", str(partners)], stdout=f, check=True)
    return path, open(path).read().splitlines()


def stream_order_document(binary, service, nats, figures):
    """The clean replay to compare the ledger with: the inbound stream's messages in
    the stream's order, replayed from a file. The ledger keeps the stream's order
    (DECISIONS 54), which is not always the publisher's: a broker killed while a chunk
    was on its way may keep the chunk's later messages and lose earlier ones (written
    to it, not yet to its disk); the publisher sends the chunk again and the lost ones
    land after the rest. Checked too: the stream holds each published event."""
    held = nats.stream_messages("INCENTIVE_EVENTS")
    path = os.path.join(service.work, "stream-order.ndjson")
    with open(path, "wb") as f:
        f.write(b"".join(m + b"\n" for m in held))
    published = {l.encode() for l in open(os.path.join(service.work, "all.ndjson")).read().splitlines()}
    on_stream = set(held)
    figures.add("published events missing from the stream", len(published - on_stream), 0)
    figures.add("messages on the stream that were not published", len(on_stream - published), 0)
    return replay_document(binary, path)


def final_checks(binary, service, nats, doc, figures):
    """What every run ends with: the service at the digest of a clean replay of what the
    stream holds, the payout stream holding each payout once, the directory verifying
    and replaying to the same, with the same events applied and refused."""
    s = settle(service, doc)
    ref = stream_order_document(binary, service, nats, figures)
    figures.add("the stream's order is the publisher's (else the stream's is the reference)",
                ref["digest"] == doc["digest"])
    figures.add("final digest equals a clean replay", s["digest"] == ref["digest"], True)
    distinct, same, different, wrong = tally(stream_payouts(binary, nats), ref)
    figures.add("payouts on the stream (distinct ids)", distinct, len(ref["payouts"]))
    figures.add("payouts published twice, same content", same)
    figures.add("payouts published twice, different content", different, 0)
    figures.add("payouts missing, unexpected or different from the replay", wrong, 0)
    service.kill(signal.SIGTERM)
    v = subprocess.run([binary, "verify", "--data-dir", service.data], capture_output=True)
    figures.add("verify of the data directory (exit code)", v.returncode, 0)
    r = subprocess.run([binary, "replay", "--data-dir", service.data, "--compact"], capture_output=True)
    logged = json.loads(r.stdout) if r.returncode == 0 else {"digest": None, "events": {}}
    figures.add("replay --data-dir equals a clean replay", logged["digest"] == ref["digest"], True)
    # Counted apart from the digest: a message taken twice would be a second duplicate
    # record, a refusal passed over would be missing. Received and duplicates may be
    # above the replay's when the broker lost messages the ledger had logged, and they
    # were published again.
    counts = lambda d: tuple(d["events"].get(k) for k in ("applied", "rejected"))  # noqa: E731
    figures.add("applied and refused events equal the clean replay's", counts(logged) == counts(ref), True)
    figures.add("messages received, duplicates (ledger / clean replay of the stream)",
                f'{logged["events"].get("received")}, {logged["events"].get("duplicates")} / '
                f'{ref["events"]["received"]}, {ref["events"]["duplicates"]}')


# --- the crash loop (part 3) --------------------------------------------------------------

def ingest_kills(binary, work, kills, rng, figures):
    """SIGKILLs of `ingest` at random moments; after each, the log must hold everything
    the killed run reported durable, and verify."""
    path, lines = generated(binary, work, max(20000, 4000 * kills), rng.randrange(1 << 30))
    data = os.path.join(work, "ingest-data")
    acknowledged, lost, damaged, mid_run = 0, 0, 0, 0
    for _ in range(kills):
        proc = subprocess.Popen([binary, "ingest", "--data-dir", data, "--events", path,
                                 "--batch-size", "256", "--print-durable"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        durable = []
        reader = threading.Thread(target=lambda: durable.extend(proc.stdout.read().decode().splitlines()))
        reader.start()
        time.sleep(rng.uniform(0.02, 0.3))
        proc.send_signal(signal.SIGKILL)
        mid_run += proc.wait() == -signal.SIGKILL
        reader.join()
        for line in durable:
            if line.startswith("durable "):
                acknowledged = max(acknowledged, int(line.split()[2]))
        v = subprocess.run([binary, "verify", "--data-dir", data], capture_output=True)
        if v.returncode == 0:
            m = re.search(rb"records: (\d+)", v.stdout)
            held = int(m.group(1)) if m else 0
            lost += held < acknowledged
        elif os.path.exists(data):
            damaged += 1
    subprocess.run([binary, "ingest", "--data-dir", data, "--events", path], capture_output=True, check=True)
    r = subprocess.run([binary, "replay", "--data-dir", data, "--compact"], capture_output=True, check=True)
    clean = replay_document(binary, path)
    figures.add("ingest: SIGKILLs", kills)
    figures.add("ingest: of which landed while it ran (not after it finished)", mid_run)
    figures.add("ingest: events", len(lines))
    figures.add("ingest: highest position reported durable before a kill", acknowledged)
    figures.add("ingest: kills after which an acknowledged position was missing", lost, 0)
    figures.add("ingest: kills after which verify found damage", damaged, 0)
    figures.add("ingest: final digest equals a clean replay", json.loads(r.stdout)["digest"] == clean["digest"], True)


def serve_kills(binary, work, kills, rng, figures, events):
    """SIGKILLs of `serve` at random moments while events are published and payouts go
    out, checkpoints written every 500 positions; after each kill, the consumer's
    acknowledgement floor must be within what the restarted service resumes after."""
    path, lines = generated(binary, work, events, rng.randrange(1 << 30))
    doc = replay_document(binary, path)
    nats = Nats(work)
    service = Service(binary, work, nats, ["--checkpoint-every", "500"])
    delays = [rng.uniform(0.05, 2.5) for _ in range(kills)]
    rate = len(lines) / max(1.0, sum(delays) + 0.4 * kills)
    publisher = Publisher(binary, work, nats, lines, rate)
    publisher.start()
    floor, lost, checked, unread = 0, 0, 0, 0
    checkpoints = set()
    try:
        for delay in delays:
            service.start()
            # A run that reaches its consumer resumes after its log's source position:
            # everything the broker saw acknowledged must be at or below it.
            deadline = time.monotonic() + delay
            resumed = None
            while time.monotonic() < deadline:
                resumed = resumed if resumed is not None else service.resume_after()
                time.sleep(0.02)
            resumed = resumed if resumed is not None else service.resume_after()
            if resumed is not None:
                checked += 1
                if resumed < floor:
                    lost += floor - resumed
            s = service.status()
            if s:
                checkpoints.add(s["checkpoint_seq"])
            service.kill()
            consumer = service.consumer()
            if consumer:
                try:
                    f = nats.ack_floor("INCENTIVE_EVENTS", consumer)
                    floor = max(floor, f or 0)
                except OSError:
                    unread += 1
        service.start()
        publisher.join()
        figures.add("serve: SIGKILLs", kills)
        figures.add("serve: restarts that reached the consumer and were checked", checked)
        figures.add("serve: kills after which the ack floor could not be read", unread)
        figures.add("serve: events published (with payouts going out meanwhile)", publisher.sent)
        figures.add("serve: checkpoints seen written", len(checkpoints - {0}))
        figures.add("serve: acknowledged events lost (ack floor above the log)", lost, 0)
        final_checks(binary, service, nats, doc, figures)
    finally:
        publisher.stopped.set()
        service.kill()
        nats.stop()


def crash_loop(binary, kills, seed):
    rng = random.Random(seed)
    print(f"crash loop: {kills} SIGKILLs, seed {seed} (re-run: scripts/crash-loop BINARY {kills} {seed})")
    figures = Figures()
    with work_root() as work:
        ingest_kills(binary, work, kills // 4, rng, figures)
        serve_kills(binary, work, kills - kills // 4, rng, figures, max(4000, kills * 300))
    return figures.show()


# --- disk faults (part 4) -----------------------------------------------------------------

def run(*cmd):
    subprocess.run(cmd, check=True, capture_output=True)


def part_files(work, lines, parts):
    """`lines` cut into `parts` files, and for each the file of every line up to its end."""
    size = (len(lines) + parts - 1) // parts
    out = []
    for i in range(parts):
        path = os.path.join(work, f"part-{i}.ndjson")
        upto = os.path.join(work, f"upto-{i}.ndjson")
        with open(path, "w") as f:
            f.write("\n".join(lines[i * size:(i + 1) * size]) + "\n")
        with open(upto, "w") as f:
            f.write("\n".join(lines[:(i + 1) * size]) + "\n")
        out.append((lines[i * size:(i + 1) * size], upto))
    return out


def publish_all(binary, work, nats, lines):
    p = Publisher(binary, work, nats, lines, rate=1e9, chunk=1000)
    p.start()
    return p


def fault_case(binary, work, name, figures, inject, clear, data, env=None, restart_to_clear=False,
               events=CASE_EVENTS):
    """One disk fault: part of the events folded, the fault injected while the next part
    is published, then cleared (by itself, or by a restart where the fault needs one),
    then the rest. Figures: the fault as /health/ready and /v1/status report it, whether
    the position held while it lasted, how long recovery took, and the final checks."""
    figures.prefix = f"{name}: "
    os.makedirs(work, exist_ok=True)
    path, lines = generated(binary, work, events, 11)
    parts = part_files(work, lines, 3)
    nats = Nats(work)
    service = Service(binary, work, nats, ["--checkpoint-every", "2000"], env=env, data=data).start()
    try:
        fault_steps(binary, work, name, figures, inject, clear, service, nats, path, parts,
                    restart_to_clear)
    except Exception as e:  # noqa: BLE001 — any failure of a case is reported, the rest go on
        case_failed(name, e, figures, service)
    finally:
        service.kill()
        nats.stop()


def case_failed(name, error, figures, service):
    """Records a case that did not complete, with what the service last said."""
    import traceback
    figures.add("completed", f"{type(error).__name__}: {error}", "yes")
    traceback.print_exc()
    print(f"--- {name}: status {service.status()}; the service's log ends with:\n"
          + service.this_run_log()[-3000:], file=sys.stderr)


def fault_steps(binary, work, name, figures, inject, clear, service, nats, path, parts,
                restart_to_clear):
    publish_all(binary, work, nats, parts[0][0]).join()
    settle(service, replay_document(binary, parts[0][1]), 120)
    inject()
    injected = time.monotonic()
    publisher = publish_all(binary, work, nats, parts[1][0])

    def faulted():
        code, body = service.ready()
        if code == 503 and isinstance(body, dict) and body.get("message"):
            return body
        return None
    ready = wait_until(f"{name}: a fault on /health/ready", faulted, 90)
    seen_after = time.monotonic() - injected
    s1 = service.status() or {}
    time.sleep(3)
    s2 = service.status() or {}
    figures.add("fault on /health/ready (503)", ready["message"][:160])
    figures.add("seconds from injection to the report", round(seen_after, 1))
    figures.add("fault in /v1/status", bool(s1.get("fault")) and bool(s2.get("fault")), True)
    figures.add("position held for 3 s while faulted", s1.get("position") == s2.get("position"), True)
    cleared = time.monotonic()
    if restart_to_clear:
        stopping = time.monotonic()
        service.kill(signal.SIGTERM)
        figures.add("seconds SIGTERM took while faulted", round(time.monotonic() - stopping, 1))
        clear()
        service.start()
    else:
        clear()

    def healthy():
        code, _ = service.ready()
        s = service.status()
        return code == 200 and s and not s.get("fault") and s["position"] > (s2.get("position") or 0)
    wait_until(f"{name}: recovery", healthy, 120, 0.2)
    figures.add("seconds from clearing to ready and folding again", round(time.monotonic() - cleared, 1))
    publisher.join()
    publish_all(binary, work, nats, parts[2][0]).join()
    final_checks(binary, service, nats, replay_document(binary, path), figures)


def shim(work):
    so = os.path.join(work, "faultfs.so")
    src = os.path.join(os.path.dirname(os.path.realpath(__file__)), "faultfs.c")
    run("gcc", "-shared", "-fPIC", "-O2", "-o", so, src, "-ldl")
    return so


def shim_case(binary, root, name, mode, figures):
    work = os.path.join(root, name)
    os.makedirs(work)
    data = os.path.join(work, "data")
    ctl = os.path.join(work, "faultfs.ctl")
    env = {"LD_PRELOAD": shim(work), "FAULTFS_CTL": ctl, "FAULTFS_DIR": data}

    def inject():
        with open(ctl, "w") as f:
            f.write(mode)

    def clear():
        os.remove(ctl)
    if mode == "short":
        # Short writes are not a fault: each caller loops until all is written. The run
        # checks that nothing notices — no fault, the same digest.
        figures.prefix = f"{name}: "
        inject()
        path, lines = generated(binary, work, CASE_EVENTS // 2, 12)
        nats = Nats(work)
        service = Service(binary, work, nats, ["--checkpoint-every", "2000"], env=env, data=data).start()
        try:
            publish_all(binary, work, nats, lines).join()
            doc = replay_document(binary, path)
            s = settle(service, doc, 180)
            figures.add("fault reported", s.get("fault"), None)
            counted = open(ctl + ".count").read().strip() if os.path.exists(ctl + ".count") else "none"
            figures.add("writes cut short by the shim", counted)
            final_checks(binary, service, nats, doc, figures)
        finally:
            service.kill()
            nats.stop()
        return
    fault_case(binary, work, name, figures, inject, clear, data, env)
    counted = open(ctl + ".count").read().strip() if os.path.exists(ctl + ".count") else "none"
    figures.prefix = f"{name}: "
    figures.add("calls failed by the shim", counted)


def enospc_case(binary, root, figures):
    work = os.path.join(root, "enospc")
    mnt = os.path.join(work, "mnt")
    os.makedirs(mnt)
    run("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt)
    filler = os.path.join(mnt, "filler")

    def inject():
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
        os.close(fd)

    def clear():
        os.remove(filler)
    try:
        fault_case(binary, work, "enospc", figures, inject, clear, os.path.join(mnt, "data"))
    finally:
        subprocess.run(["umount", "-l", mnt])


def readonly_case(binary, root, figures):
    """ext4 on a loop device mounted errors=remount-ro, its error triggered through
    sysfs: the kernel turns it read-only with the ledger's files open (EROFS on every
    write), as on a real disk error. It cannot be made writable again while files on it
    are open, so clearing it is the operator's: stop the service, unmount, e2fsck, mount,
    start."""
    work = os.path.join(root, "readonly")
    mnt = os.path.join(work, "mnt")
    os.makedirs(mnt)
    image = os.path.join(work, "ext4.img")
    run("truncate", "-s", "256M", image)
    run("mkfs.ext4", "-q", "-F", image)
    run("mount", "-o", "loop,errors=remount-ro", image, mnt)
    device = None
    for line in open("/proc/mounts"):
        fields = line.split()
        if fields[1] == mnt:
            device = os.path.basename(fields[0])

    def inject():
        with open(f"/sys/fs/ext4/{device}/trigger_fs_error", "w") as f:
            f.write("1")

    def clear():
        run("umount", mnt)
        subprocess.run(["e2fsck", "-fy", image], capture_output=True)
        run("mount", "-o", "loop,errors=remount-ro", image, mnt)
    try:
        fault_case(binary, work, "read-only", figures, inject, clear, os.path.join(mnt, "data"),
                   restart_to_clear=True)
    finally:
        subprocess.run(["umount", "-l", mnt])


def disk_faults(binary, cases):
    figures = Figures()
    with work_root() as root:
        for case in cases:
            if case == "eio":
                shim_case(binary, root, "eio", "eio", figures)
            elif case == "short":
                shim_case(binary, root, "short-writes", "short", figures)
            elif case == "enospc":
                enospc_case(binary, root, figures)
            elif case == "readonly":
                readonly_case(binary, root, figures)
            else:
                raise SystemExit(f"unknown case {case}")
    return figures.show()


# --- NATS faults (part 5) -----------------------------------------------------------------

def nats_case(binary, root, name, figures, fault, config="", events=CASE_EVENTS):
    """One NATS fault: a third of the events folded, `fault(ctx)` run while the second
    third is published, then the rest; the final checks compare with a clean replay.
    `fault` may return payouts read from a stream it is about to lose, so that every
    payout ever published is counted."""
    figures.prefix = f"{name}: "
    work = os.path.join(root, name)
    os.makedirs(work)
    path, lines = generated(binary, work, events, 13)
    parts = part_files(work, lines, 3)
    nats = Nats(work)
    service = Service(binary, work, nats, ["--checkpoint-every", "2000"])
    if config:
        with open(service.config, "a") as f:
            f.write(config)
    service.start()
    try:
        publish_all(binary, work, nats, parts[0][0]).join()
        settle(service, replay_document(binary, parts[0][1]), 120)
        ctx = {"nats": nats, "service": service, "binary": binary, "work": work, "figures": figures,
               "publisher": publish_all(binary, work, nats, parts[1][0])}
        earlier = fault(ctx) or []
        ctx["publisher"].join()
        publish_all(binary, work, nats, parts[2][0]).join()
        doc = replay_document(binary, path)
        if earlier:
            # The stream was lost: what it held before, and what the new one holds, must
            # together be every payout once, with the replay's content.
            settle(service, doc)
            s = service.status()
            figures.add("final digest equals a clean replay", s["digest"] == doc["digest"], True)
            after = stream_payouts(binary, nats)
            _, _, different, wrong = tally(earlier + after, doc)
            lost_ids = {e["id"] for e in earlier}
            again = sum(1 for m in after if m["id"] in lost_ids)
            figures.add("payouts on the lost stream", len(earlier))
            figures.add("payouts on the new stream", len(after))
            figures.add("of which published again after the loss (same id and content)", again)
            figures.add("payouts published twice, different content", different, 0)
            figures.add("payouts missing, unexpected or different from the replay", wrong, 0)
            service.kill(signal.SIGTERM)
        else:
            final_checks(binary, service, nats, doc, figures)
    except Exception as e:  # noqa: BLE001 — any failure of a case is reported, the rest go on
        case_failed(name, e, figures, service)
    finally:
        service.kill()
        nats.stop()


def wait_backlog(ctx):
    """Waits until payouts are waiting to go out (the payout window is open)."""
    wait_until("payouts waiting to go out",
               lambda: (ctx["service"].status() or {}).get("outbox_backlog", 0) > 0, 60, 0.02)


def pause_nats(ctx):
    """The broker paused (SIGSTOP) for 20 s, longer than the 3 s ack wait: when does
    /health/ready say so, and does everything come through after SIGCONT?"""
    nats, service = ctx["nats"], ctx["service"]
    time.sleep(0.5)
    nats.proc.send_signal(signal.SIGSTOP)
    paused = time.monotonic()
    reported = None
    while time.monotonic() - paused < 20:
        code, body = service.ready()
        if code == 503 and reported is None:
            reported = (round(time.monotonic() - paused, 1), body.get("message", "")[:120])
        time.sleep(0.5)
    nats.proc.send_signal(signal.SIGCONT)
    ctx["figures"].add("seconds until /health/ready reported the paused broker",
                       reported[0] if reported else "not within 20 s")
    if reported:
        ctx["figures"].add("its report", reported[1])


def kill_in_payout_window(ctx):
    nats = ctx["nats"]
    wait_backlog(ctx)
    nats.stop(signal.SIGKILL)
    time.sleep(2)
    nats.start()


def restart_intact(ctx):
    nats = ctx["nats"]
    time.sleep(0.5)
    nats.stop(signal.SIGTERM)
    time.sleep(1)
    nats.start()


def delete_store(ctx):
    """The broker loses its store: the streams come back empty, their sequences from 1,
    while the ledger's log has consumed far more. Publishing stops first, so that the
    events published to the lost stream are exactly the ones before the loss. The
    service must stop by itself (its consumer is gone), and, started again as its
    supervisor would, re-create the streams and consume the new one from its start."""
    nats, binary, service, figures = ctx["nats"], ctx["binary"], ctx["service"], ctx["figures"]
    ctx["publisher"].join()
    settle(service, replay_document(binary, os.path.join(ctx["work"], "upto-1.ndjson")), 120)
    earlier = stream_payouts(binary, nats)
    nats.stop(signal.SIGKILL)
    shutil.rmtree(nats.store)
    lost = time.monotonic()
    nats.start()
    wait_until("the service to stop by itself", lambda: service.proc.poll() is not None, 120)
    figures.add("seconds until the service stopped by itself", round(time.monotonic() - lost, 1))
    figures.add("its exit code", service.proc.returncode)
    last = [l for l in service.this_run_log().splitlines() if "error" in l.lower()]
    figures.add("its last error", (last[-1] if last else "none")[-200:])
    service.start()
    wait_until("the restarted service to reach its consumer", lambda: service.resume_after() is not None, 60)
    rebased = "recreated or purged" in service.this_run_log()
    figures.add("the restart saw the stream behind the log and consumed it from its start", rebased, True)
    ctx["publisher"] = publish_all(binary, ctx["work"], nats, [])
    return earlier


def redelivery_storm(ctx):
    """A 1 s ack wait with the ledger stopped for 4 s mid-stream: everything delivered
    and not acknowledged comes again, many times over."""
    service = ctx["service"]
    # Stopped as soon as the first chunk is in the stream, so that the broker has
    # delivered messages the ledger has not acknowledged yet.
    wait_until("the first chunk", lambda: ctx["publisher"].sent > 0, 60, 0.005)
    service.proc.send_signal(signal.SIGSTOP)
    time.sleep(4)
    service.proc.send_signal(signal.SIGCONT)
    time.sleep(2)
    consumer = service.consumer()
    info = ctx["nats"].request(f"$JS.API.CONSUMER.INFO.INCENTIVE_EVENTS.{consumer}") if consumer else {}
    ctx["figures"].add("messages redelivered (consumer's num_redelivered)", info.get("num_redelivered"))


def slow_consumer(ctx):
    """The ledger stops reading for 6 s while the publisher goes on at full speed: the
    broker buffers, marks the connection slow, and may drop what it pushed."""
    service = ctx["service"]
    service.proc.send_signal(signal.SIGSTOP)
    time.sleep(6)
    service.proc.send_signal(signal.SIGCONT)


NATS_CASES = {
    "pause": (pause_nats, "[inbound]\nack_wait_secs = 3\n"),
    "kill-payouts": (kill_in_payout_window, ""),
    "restart": (restart_intact, ""),
    "store-deleted": (delete_store, ""),
    "redelivery": (redelivery_storm, "[inbound]\nack_wait_secs = 1\n"),
    "slow-consumer": (slow_consumer, ""),
}


def nats_faults(binary, cases):
    figures = Figures()
    with work_root() as root:
        for case in cases:
            fault, config = NATS_CASES[case]
            nats_case(binary, root, case, figures, fault, config)
    return figures.show()


# --- soak (part 7) ------------------------------------------------------------------------

def rss_mb(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def percentile(values, q):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def soak(binary, minutes, rate, kills=3):
    """A steady publish rate for `minutes`, queries ten times a second, `kills` SIGKILLs
    in its first third; every 30 s a row: memory, query latency, lag, checkpoints.
    Errors are queries not answered (the service restarting after a kill); a 404 for a
    partner with no event yet is an answer."""
    seconds = minutes * 60
    figures = Figures()
    with work_root() as work:
        path, lines = generated(binary, work, int(seconds * rate), 21)
        doc = replay_document(binary, path)
        nats = Nats(work)
        service = Service(binary, work, nats).start()
        wait_until("the service", lambda: service.ready()[0] == 200, 60)
        publisher = Publisher(binary, work, nats, lines, rate, chunk=max(50, rate // 2))
        publisher.start()
        partners = [f"P-{i:03}" for i in range(1, 401)]
        rng = random.Random(21)
        # The kills come in the first third, so that the rest of the run is one process
        # long enough for memory to show whether it levels off across checkpoints.
        kill_at = [seconds * (i + 1) / (3 * (kills + 1)) for i in range(kills)]
        started = time.monotonic()
        latencies, errors, rows = [], 0, []
        next_row = 30
        print(f"soak: {minutes} min at {rate} events/s ({len(lines)} events, 400 partners), "
              f"queries 10/s, SIGKILLs at {', '.join(f'{k:.0f} s' for k in kill_at)}")
        print(f"{'t (s)':>6} {'rss MB':>7} {'position':>9} {'lag':>7} {'outbox':>6} {'ckpt':>9} "
              f"{'q p50 ms':>8} {'q p99 ms':>8} {'q max ms':>8} {'errors':>6}")
        try:
            while True:
                now = time.monotonic() - started
                if kill_at and now >= kill_at[0]:
                    kill_at.pop(0)
                    service.kill()
                    service.start()
                if now >= next_row:
                    s = service.status() or {}
                    pos = s.get("position")
                    published = publisher.sent
                    row = (round(now), rss_mb(service.proc.pid), pos, s.get("consumer_pending"),
                           s.get("outbox_backlog"), s.get("checkpoint_seq"),
                           percentile(latencies, 0.5), percentile(latencies, 0.99),
                           max(latencies) if latencies else None, errors)
                    rows.append(row)
                    fmt = lambda v, w, d=1: f"{v:>{w}.{d}f}" if isinstance(v, float) else f"{str(v):>{w}}"
                    print(" ".join([fmt(row[0], 6), fmt(row[1], 7), fmt(row[2], 9), fmt(row[3], 7),
                                    fmt(row[4], 6), fmt(row[5], 9), fmt(row[6], 8), fmt(row[7], 8),
                                    fmt(row[8], 8), fmt(row[9], 6)]), flush=True)
                    latencies, errors = [], 0
                    next_row += 30
                    if now >= seconds and not publisher.is_alive():
                        break
                t = time.monotonic()
                code, _ = service.get(f"/v1/partners/{rng.choice(partners)}/balances")
                if code in (200, 404):  # 404: a partner with no event yet
                    latencies.append((time.monotonic() - t) * 1000)
                else:
                    errors += 1
                if rng.random() < 0.1:
                    service.get("/v1/status")
                time.sleep(max(0.0, 0.1 - (time.monotonic() - t)))
            figures.add("events published", publisher.sent)
            steady = [r[1] for r in rows[len(rows) // 4:] if r[1]]
            if steady:
                figures.add("rss over the last three quarters, MB (min / max)",
                            f"{min(steady):.0f} / {max(steady):.0f}")
            final_checks(binary, service, nats, doc, figures)
        except GaveUp as e:
            figures.add("completed", str(e), "yes")
        finally:
            publisher.stopped.set()
            service.kill()
            nats.stop()
    return figures.show()


def main():
    mode, binary = sys.argv[1], os.path.realpath(sys.argv[2])
    args = sys.argv[3:]
    if mode == "crash-loop":
        kills = int(args[0]) if args else 200
        seed = int(args[1]) if len(args) > 1 else 1
        sys.exit(crash_loop(binary, kills, seed))
    if mode == "soak":
        minutes = float(args[0]) if args else 30
        rate = int(args[1]) if len(args) > 1 else 300
        sys.exit(soak(binary, minutes, rate))
    if mode == "nats-faults":
        sys.exit(nats_faults(binary, args or list(NATS_CASES)))
    if mode == "disk-faults":
        sys.exit(disk_faults(binary, args or ["eio", "short", "enospc", "readonly"]))
    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
