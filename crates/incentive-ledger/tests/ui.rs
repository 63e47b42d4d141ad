//! The web pages in a real browser: headless Chromium (Debian's, through chromedriver)
//! against a real `serve` on 127.0.0.1 with a real nats-server. A partner signs in and
//! sees what the JSON API says, opens a statement, submits a claim and sees it pending;
//! finance approves part of it; the partner sees it approved and paid, and the payout is
//! on the payout stream. Another partner's page is a missing page, a form without its
//! CSRF token is refused, a wrong token cannot sign in. Screenshots of the main pages go
//! to `target/ui-screenshots/`.

use std::time::Duration;

mod common;
use common::browser::Browser;
use common::*;

const TOKENS: &str = r#"
[[auth.tokens]]
token = "fin-token"
role = "finance"
name = "fiona"
[[auth.tokens]]
token = "p1-token"
role = "partner:P-1"
[[auth.tokens]]
token = "p2-token"
role = "partner:P-2"
"#;

fn shots() -> std::path::PathBuf {
    root().join("target/ui-screenshots")
}

fn sign_in(b: &Browser, base: &str, token: &str) {
    b.open(&format!("{base}/ui/sign-in"));
    b.clear_and_type("#token", token);
    b.click("form.card button[type=submit]");
}

fn sign_out(b: &Browser) {
    b.click("form.inline button");
    assert!(b.text("main").contains("Signed out"));
}

/// The rows of the first table on the page, as texts of their cells.
fn table(b: &Browser, css: &str) -> Vec<Vec<String>> {
    let v = b.run(&format!(
        "return Array.from(document.querySelectorAll('{css} tbody tr')).map(r => Array.from(r.children).map(c => c.innerText.trim()));"
    ));
    serde_json::from_value(v).unwrap_or_default()
}

#[test]
fn partner_and_finance_work_through_the_pages() {
    let tmp = tempfile::tempdir().unwrap();
    let Served {
        nats,
        mut service,
        port,
        ..
    } = Served::fixture(tmp.path(), TOKENS, "mdf_claims_fifo_expiry");
    let base = format!("http://127.0.0.1:{port}");
    let b = Browser::start();

    // A wrong token cannot sign in, and says nothing more.
    sign_in(&b, &base, "not-a-token");
    let said = b.text("main");
    assert!(
        said.contains("That token cannot sign in here."),
        "{said} at {}",
        b.url()
    );
    assert!(b.url().ends_with("/ui/sign-in"));

    // The partner's dashboard shows what the JSON API says.
    sign_in(&b, &base, "p1-token");
    assert!(b.url().ends_with("/ui/partners/P-1"), "{}", b.url());
    assert!(b.text("h1").contains("Partner P-1"));
    let (status, api) = http(
        port,
        "GET",
        "/v1/partners/P-1/balances",
        &[("Authorization", "Bearer p1-token")],
        b"",
    );
    assert_eq!(status, 200);
    let api: serde_json::Value = serde_json::from_str(&api).unwrap();
    let rows = table(&b, "section.card");
    let api_rows = api["balances"].as_array().unwrap();
    assert_eq!(rows.len(), api_rows.len(), "{rows:?}");
    for (row, balance) in rows.iter().zip(api_rows) {
        assert_eq!(row[0], balance["period"].as_str().unwrap());
        assert_eq!(
            row[2],
            format!("{} EUR", balance["earned"].as_str().unwrap())
        );
        assert_eq!(row[3], format!("{} EUR", balance["paid"].as_str().unwrap()));
        assert_eq!(
            row[5],
            format!("{} EUR", balance["available"].as_str().unwrap())
        );
    }
    assert!(b.text("footer").contains("log position"));
    b.screenshot(&shots().join("partner-dashboard.png"));
    // A statement explains an entry event by event.
    b.click("section.card tbody tr a");
    assert!(
        b.text("h1").starts_with("Statement: MDF-2026"),
        "{}",
        b.text("h1")
    );
    assert!(!table(&b, "main").is_empty());
    b.screenshot(&shots().join("partner-statement.png"));

    // Another partner's page is answered as a missing one.
    b.open(&format!("{base}/ui/partners/P-2"));
    let foreign = b.text("main");
    b.open(&format!("{base}/ui/no-such-page"));
    assert_eq!(foreign, b.text("main"));
    assert!(foreign.contains("Not found"));

    // A claim: submitted, pending once the ledger has it.
    b.open(&format!("{base}/ui/partners/P-1/claims"));
    b.run("document.querySelector('#program_id').value = 'MDF-2026'; return null;");
    b.clear_and_type("#amount", "100.00");
    b.clear_and_type("#activity", "webinar series");
    b.clear_and_type("#description", "three sessions in March");
    b.screenshot(&shots().join("partner-claim-form.png"));
    b.click("form.card button[type=submit]");
    let said = b.text("main");
    assert!(said.contains("is pending."), "{said}");
    let claim_id = said
        .split("Claim ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap()
        .to_string();
    // A form without its CSRF token is refused, and nothing is sent.
    b.run("document.querySelector('form.card input[name=csrf]').remove(); return null;");
    b.clear_and_type("#amount", "5.00");
    b.clear_and_type("#activity", "forged");
    b.click("form.card button[type=submit]");
    assert!(
        b.text("main").contains("This form was refused"),
        "{}",
        b.text("main")
    );
    sign_out(&b);

    // Finance approves part of it.
    sign_in(&b, &base, "fin-token");
    assert!(b.url().ends_with("/ui/console"), "{}", b.url());
    b.screenshot(&shots().join("console-status.png"));
    b.open(&format!("{base}/ui/console/claims"));
    assert!(b.text("main").contains(&claim_id), "{}", b.text("main"));
    b.screenshot(&shots().join("console-claims.png"));
    b.clear_and_type(&format!("#amount-{claim_id}"), "60.00");
    b.click(&format!(
        "form[action='/ui/console/claims/{claim_id}'] button[value=approved]"
    ));
    let said = b.text("main");
    assert!(
        said.contains(&format!("Claim {claim_id} is approved (60.00 approved).")),
        "{said}"
    );
    for page in ["programs", "refusals", "payouts"] {
        b.open(&format!("{base}/ui/console/{page}"));
        assert!(b.exists("main h1"), "{page}");
        b.screenshot(&shots().join(format!("console-{page}.png")));
    }
    sign_out(&b);

    // The partner sees it approved, and paid.
    sign_in(&b, &base, "p1-token");
    b.open(&format!("{base}/ui/partners/P-1/claims"));
    let row = table(&b, "main")
        .into_iter()
        .find(|r| r[0] == claim_id)
        .unwrap();
    assert_eq!(row[3], "approved");
    assert_eq!(row[4], "60.00");
    b.open(&format!("{base}/ui/partners/P-1/payouts"));
    let paid = table(&b, "main");
    assert!(
        paid.iter().any(|r| r[5] == "60.00 EUR" && r[4] == "claim"),
        "{paid:?}"
    );
    b.screenshot(&shots().join("partner-payouts.png"));

    // The payout is on the payout stream, and the events carry who sent them.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stream = stream_payouts(&nats);
        if stream.iter().any(|p| p["data"]["amount"] == "60.00") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no 60.00 payout on the stream"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(b);
    service.terminate();
    let exported = String::from_utf8(
        bin()
            .args(["export", "--data-dir"])
            .arg(tmp.path().join("data"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(exported.contains(r#""source":"portal/P-1""#), "{exported}");
    assert!(
        exported.contains(r#""source":"console/fiona""#),
        "{exported}"
    );
    assert!(!exported.contains("forged"));
}
