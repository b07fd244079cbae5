//! A headless Chromium driven over the Chrome DevTools protocol, for the tests that check a
//! page in a real browser (the live dashboard's).
//!
//! The protocol runs over a pair of pipes (`--remote-debugging-pipe`: Chromium reads commands
//! on its fd 3 and writes answers and events on its fd 4, each message JSON ended by a NUL), so
//! no WebDriver server and no websocket client are needed: only the `chromium` package
//! (`scripts/test` installs it). A shell maps the pipes onto fds 3 and 4 before it execs
//! Chromium. A reader thread takes the answers; a `confirm()` dialog the page opens is
//! accepted there at once, as a person pressing OK would.
//!
//! Every wait has a deadline; a missing browser fails the test with what to install.
#![allow(dead_code)] // each test uses its own subset

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The longest one protocol message may be (a full-page screenshot is a few MiB).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// How long one protocol command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// The Chromium binary: `STRATA_CHROMIUM`, or the first of Debian's and others' names on PATH.
pub fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("STRATA_CHROMIUM") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "STRATA_CHROMIUM names {}, which is not a file",
            path.display()
        );
        return path;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome", "chrome"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "no Chromium found (tried chromium, chromium-browser, google-chrome and chrome on PATH, \
         and STRATA_CHROMIUM): install Debian's `chromium` package (./scripts/test does), or \
         name a binary in STRATA_CHROMIUM"
    );
}

/// One headless browser with one page, closed on drop.
pub struct Browser {
    child: Child,
    writer: Arc<Mutex<ChildStdin>>,
    answers: Receiver<Value>,
    next_id: u64,
    /// The id the page's commands carry (the protocol's `sessionId` of the attached target).
    page: String,
    _profile: tempfile::TempDir,
}

/// Writes one protocol message.
fn write(writer: &Mutex<ChildStdin>, message: &Value) {
    let mut w = writer.lock().expect("the browser's pipe");
    let mut bytes = serde_json::to_vec(message).expect("JSON");
    bytes.push(0);
    w.write_all(&bytes).expect("write to the browser");
    w.flush().expect("flush the browser's pipe");
}

impl Browser {
    /// Starts a headless Chromium whose page is `width`×`height` CSS pixels (`mobile` for a
    /// phone: touch, and the viewport meta tag honoured).
    pub fn launch(width: u32, height: u32, mobile: bool) -> Browser {
        let binary = chromium();
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null"#)
            .arg(&binary)
            .args([
                "--headless",
                // Tests run as root in containers, where Chromium's sandbox cannot start; the
                // page is the test's own, on loopback.
                "--no-sandbox",
                "--remote-debugging-pipe",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--mute-audio",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let writer = Arc::new(Mutex::new(child.stdin.take().expect("stdin")));
        let out = child.stdout.take().expect("stdout");
        let (tx, answers) = channel();
        let replier = writer.clone();
        std::thread::spawn(move || {
            let mut out = BufReader::new(out);
            loop {
                let mut message = Vec::new();
                let read = (&mut out)
                    .take(MAX_MESSAGE as u64)
                    .read_until(0, &mut message);
                match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if message.pop() != Some(0) {
                    return; // too long, or the browser went away mid-message
                }
                let Ok(doc) = serde_json::from_slice::<Value>(&message) else {
                    continue;
                };
                if doc["method"] == "Page.javascriptDialogOpening" {
                    let mut accept = json!({"id": 0, "method": "Page.handleJavaScriptDialog",
                        "params": {"accept": true}});
                    accept["sessionId"] = doc["sessionId"].clone();
                    write(&replier, &accept);
                } else if doc.get("id").is_some() && tx.send(doc).is_err() {
                    return;
                }
            }
        });
        let mut browser = Browser {
            child,
            writer,
            answers,
            next_id: 1,
            page: String::new(),
            _profile: profile,
        };
        let target = browser.browser_call("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().expect("a target id").to_owned();
        let attached = browser.browser_call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        browser.page = attached["sessionId"]
            .as_str()
            .expect("the attached page's id")
            .to_owned();
        browser.call("Page.enable", json!({}));
        browser.call("Runtime.enable", json!({}));
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        );
        if mobile {
            browser.call(
                "Emulation.setTouchEmulationEnabled",
                json!({"enabled": true, "maxTouchPoints": 5}),
            );
        }
        browser
    }

    fn send(&mut self, method: &str, params: Value, to_page: bool) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if to_page {
            message["sessionId"] = json!(self.page);
        }
        write(&self.writer, &message);
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.answers.recv_timeout(left) {
                Ok(doc) if doc["id"] == id => {
                    if let Some(error) = doc.get("error") {
                        panic!("{method} failed: {error}");
                    }
                    return doc["result"].clone();
                }
                Ok(_) => continue, // an answer to a dialog accepted by the reader
                Err(RecvTimeoutError::Timeout) => {
                    panic!("the browser did not answer {method} in {COMMAND_TIMEOUT:?}")
                }
                Err(RecvTimeoutError::Disconnected) => panic!("the browser went away ({method})"),
            }
        }
    }

    /// A command to the browser itself.
    pub fn browser_call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, false)
    }

    /// A command to the page.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, true)
    }

    /// Opens `url` and waits until its document has loaded.
    pub fn goto(&mut self, url: &str) {
        let nav = self.call("Page.navigate", json!({"url": url}));
        assert!(
            nav.get("errorText").is_none(),
            "cannot open {url}: {}",
            nav["errorText"]
        );
        self.wait_for(
            "document.readyState === 'complete'",
            Duration::from_secs(20),
            &format!("{url} to load"),
        );
    }

    /// The value of a JavaScript expression in the page (a promise is awaited); a thrown
    /// exception fails the test.
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression} threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Evaluates `expression` until it is truthy, then returns its value; fails with `what`
    /// and the last value after `within`.
    pub fn wait_for(&mut self, expression: &str, within: Duration, what: &str) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.eval(expression);
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
                Value::String(s) => !s.is_empty(),
                Value::Array(_) | Value::Object(_) => true,
            };
            if truthy {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "waited {within:?} for {what}; last: {v}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Presses the element `selector_js` evaluates to (an expression returning an element),
    /// as a pointer would: scrolled into view, then a press and a release at its centre.
    pub fn click(&mut self, selector_js: &str) {
        let rect = self.eval(&format!(
            "(() => {{ const e = {selector_js}; if (!e) return null; e.scrollIntoView({{block: 'center'}}); \
             const r = e.getBoundingClientRect(); return {{x: r.x + r.width / 2, y: r.y + r.height / 2, w: r.width, h: r.height}}; }})()"
        ));
        assert!(rect.is_object(), "nothing to press: {selector_js}");
        assert!(
            rect["w"].as_f64().unwrap_or(0.0) > 0.0,
            "{selector_js} is not visible: {rect}"
        );
        let (x, y) = (rect["x"].clone(), rect["y"].clone());
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }

    /// Types `text` into the element `selector_js` evaluates to, after pressing it.
    pub fn type_into(&mut self, selector_js: &str, text: &str) {
        self.click(selector_js);
        self.call("Input.insertText", json!({"text": text}));
    }

    /// A PNG of the whole page (`full`) or of the viewport, written to `path`.
    pub fn screenshot(&mut self, path: &Path, full: bool) {
        use base64::Engine as _;
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": full}),
        );
        let data = shot["data"].as_str().expect("screenshot data");
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64 PNG");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.next_id += 1;
        let close = json!({"id": self.next_id, "method": "Browser.close"});
        if let Ok(mut w) = self.writer.lock() {
            let mut bytes = serde_json::to_vec(&close).unwrap_or_default();
            bytes.push(0);
            let _ = w.write_all(&bytes);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
