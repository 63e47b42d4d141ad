//! A headless Chromium driven through chromedriver's W3C WebDriver protocol (JSON over
//! HTTP on a free 127.0.0.1 port): the few commands the page tests need — open a URL,
//! find, type, click, read text, run a line of script, take a screenshot. Written here
//! because it is a dozen requests over the HTTP helper the tests already have; a
//! WebDriver crate would bring an async HTTP client stack for them.
//!
//! Chromium and chromedriver are Debian's (`scripts/test` installs them): `$CHROMIUM_BIN`
//! and `$CHROMEDRIVER_BIN`, else `/usr/bin/chromium` and `/usr/bin/chromedriver`.

use super::{free_port, http, wait_until, DiesWithTheTest, Reaped};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The W3C name of an element reference in answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    port: u16,
    session: String,
    _driver: Reaped,
    _profile: tempfile::TempDir,
}

fn binary(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.is_file(),
        "{} not found: run scripts/test (it installs Debian's chromium and chromium-driver) or set {var}",
        path.display()
    );
    path
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with an empty profile.
    pub fn start() -> Browser {
        let chromium = binary("CHROMIUM_BIN", "/usr/bin/chromium");
        let driver = binary("CHROMEDRIVER_BIN", "/usr/bin/chromedriver");
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .dies_with_the_test()
            .spawn()
            .unwrap();
        let driver = Reaped(child);
        assert!(
            wait_until(Duration::from_secs(20), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            }),
            "chromedriver did not listen"
        );
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        } } });
        let answer = call(port, "POST", "/session", Some(&capabilities));
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}"))
            .to_string();
        Browser {
            port,
            session,
            _driver: driver,
            _profile: profile,
        }
    }

    fn at(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    pub fn open(&self, url: &str) {
        call(
            self.port,
            "POST",
            &self.at("/url"),
            Some(&json!({ "url": url })),
        );
    }

    pub fn url(&self) -> String {
        call(self.port, "GET", &self.at("/url"), None)["value"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The element `css` selects (the test fails if there is none).
    pub fn find(&self, css: &str) -> String {
        let answer = call(
            self.port,
            "POST",
            &self.at("/element"),
            Some(&json!({ "using": "css selector", "value": css })),
        );
        answer["value"][ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {answer}"))
            .to_string()
    }

    pub fn exists(&self, css: &str) -> bool {
        let answer = call(
            self.port,
            "POST",
            &self.at("/elements"),
            Some(&json!({ "using": "css selector", "value": css })),
        );
        answer["value"].as_array().is_some_and(|a| !a.is_empty())
    }

    pub fn clear_and_type(&self, css: &str, text: &str) {
        let e = self.find(css);
        call(
            self.port,
            "POST",
            &self.at(&format!("/element/{e}/clear")),
            Some(&json!({})),
        );
        call(
            self.port,
            "POST",
            &self.at(&format!("/element/{e}/value")),
            Some(&json!({ "text": text })),
        );
    }

    /// Clicks what `css` selects — a link or a form's button — and waits until the page
    /// it leads to has loaded (a click returns before the navigation it starts ends).
    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.run("window.__ledger_before_click = true; return null;");
        call(
            self.port,
            "POST",
            &self.at(&format!("/element/{e}/click")),
            Some(&json!({})),
        );
        let loaded = wait_until(Duration::from_secs(30), || {
            self.run(
                "return window.__ledger_before_click === undefined && document.readyState === 'complete';",
            ) == Value::Bool(true)
        });
        assert!(loaded, "the page after clicking {css} did not load");
    }

    /// The rendered text of the element `css` selects (empty if there is none).
    pub fn text(&self, css: &str) -> String {
        if !self.exists(css) {
            return String::new();
        }
        let e = self.find(css);
        call(
            self.port,
            "GET",
            &self.at(&format!("/element/{e}/text")),
            None,
        )["value"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Runs `script` (a function body) in the page and returns its value.
    pub fn run(&self, script: &str) -> Value {
        call(
            self.port,
            "POST",
            &self.at("/execute/sync"),
            Some(&json!({ "script": script, "args": [] })),
        )["value"]
            .clone()
    }

    /// Writes a PNG of the page to `path`.
    pub fn screenshot(&self, path: &Path) {
        let answer = call(self.port, "GET", &self.at("/screenshot"), None);
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(answer["value"].as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| {
            http(
                self.port,
                "DELETE",
                &format!("/session/{}", self.session),
                &[],
                b"",
            )
        });
    }
}

fn call(port: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let (status, text) = http(
        port,
        method,
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    assert!(
        status == 200,
        "WebDriver {method} {path}: {status} {}",
        text.chars().take(2000).collect::<String>()
    );
    v
}
