"""Pretty-prints what the quickstart reads back: `payouts` (payout.issued CloudEvents,
one a line) or `balances` (a replay document) from stdin."""
import json
import sys


def payouts():
    for line in sys.stdin:
        event = json.loads(line)
        p = event["data"]
        print("  {}  {:<6} {:<10} {:<8} {:>10} {}  {}".format(
            event["id"], p["partner_id"], p["program_id"], p["period"],
            p["amount"], p["currency"], p["reason"]))


def balances():
    doc = json.load(sys.stdin)
    for b in doc["balances"]:
        extra = "  available {}".format(b["available"]) if "available" in b else ""
        print("  {:<6} {:<10} {:<8} basis {:>10}  earned {:>9} {}  paid {:>9}{}".format(
            b["partner_id"], b["program_id"], b["period"], b["basis"], b["earned"],
            b["currency"], b["paid"], extra))
    e = doc["events"]
    print("events: {} received, {} applied, {} rejected, {} duplicates".format(
        e["received"], e["applied"], e["rejected"], e["duplicates"]))
    print("digest:", doc["digest"])


{"payouts": payouts, "balances": balances}[sys.argv[1]]()
