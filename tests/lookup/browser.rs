//! The lookup page in a real headless Chromium, driven over the W3C WebDriver protocol
//! (chromedriver, spoken to with reqwest): sign in through the test IdP, search as you type,
//! open a person. A screenshot of each step goes to `target/test-artifacts/lookup/`.
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them); SQLite only,
//! the backends' parity is the HTTP tests' business.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::test_idp::{IdpServer, TestIdp};
use crate::support::{Backend, TestServer};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long a page may take to show what the test waits for.
const PATIENCE: Duration = Duration::from_secs(20);

/// A chromedriver process of this test and its browser session; both end on drop.
struct WebDriver {
    process: Child,
    http: reqwest::Client,
    session: String,
    base: String,
    artifacts: PathBuf,
}

impl WebDriver {
    async fn start(artifacts: PathBuf) -> WebDriver {
        for (path, package) in [(CHROMEDRIVER, "chromium-driver"), (CHROMIUM, "chromium")] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} is missing: the browser test needs Debian's `{package}` \
                 (apt-get install -y chromium chromium-driver, or run .ci/run)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let process = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {CHROMEDRIVER} ({e}): install chromium-driver or run .ci/run")
            });
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let ready = http.get(format!("{base}/status")).send().await;
            if let Ok(ready) = ready {
                let status: Value = ready.json().await.unwrap_or_default();
                if status["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready on port {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900"],
            },
        }}});
        let created = http.post(format!("{base}/session")).json(&capabilities).send().await.unwrap();
        let created: Value = created.json().await.unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver could not start chromium: {created}"))
            .to_string();
        std::fs::create_dir_all(&artifacts).unwrap();
        WebDriver { process, http, session, base, artifacts }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let request = self.http.request(method, url);
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.call(Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    async fn url(&self) -> String {
        self.call(Method::GET, "/url", None).await.as_str().unwrap_or_default().to_string()
    }

    /// The elements `css` selects now (possibly none).
    async fn all(&self, css: &str) -> Vec<String> {
        let found =
            self.call(Method::POST, "/elements", Some(json!({"using": "css selector", "value": css}))).await;
        found
            .as_array()
            .map(|items| items.iter().filter_map(|e| e[ELEMENT].as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }

    async fn text(&self, element: &str) -> String {
        let text = self.call(Method::GET, &format!("/element/{element}/text"), None).await;
        text.as_str().unwrap_or_default().to_string()
    }

    /// The texts of the elements `css` selects.
    async fn texts(&self, css: &str) -> Vec<String> {
        let mut texts = Vec::new();
        for element in self.all(css).await {
            texts.push(self.text(&element).await);
        }
        texts
    }

    /// Waits until `check` holds of the texts `css` selects; returns them.
    async fn wait_for(&self, what: &str, css: &str, check: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let texts = self.texts(css).await;
            if check(&texts) {
                return texts;
            }
            if Instant::now() > deadline {
                self.screenshot("failure").await;
                panic!("timed out waiting for {what} ({css}); found {texts:?} at {}", self.url().await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_for_url(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let url = self.url().await;
            if check(&url) {
                return url;
            }
            if Instant::now() > deadline {
                self.screenshot("failure").await;
                panic!("timed out waiting for {what}; the browser is at {url}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn one(&self, css: &str) -> String {
        self.all(css).await.into_iter().next().unwrap_or_else(|| panic!("no element matches {css}"))
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.one(css).await;
        self.call(Method::POST, &format!("/element/{element}/value"), Some(json!({ "text": text }))).await;
    }

    async fn click(&self, css: &str) {
        let element = self.one(css).await;
        self.call(Method::POST, &format!("/element/{element}/click"), Some(json!({}))).await;
    }

    /// Saves the page as `<name>.png` among the artifacts.
    async fn screenshot(&self, name: &str) {
        let shot = self.call(Method::GET, "/screenshot", None).await;
        let png =
            base64::engine::general_purpose::STANDARD.decode(shot.as_str().unwrap_or_default()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "the screenshot {name} is not a PNG");
        std::fs::write(self.artifacts.join(format!("{name}.png")), png).unwrap();
    }
}

impl Drop for WebDriver {
    fn drop(&mut self) {
        // Ending chromedriver ends the browser it started.
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_search_and_open_a_person_in_chromium() {
    let server = TestServer::start(Backend::Sqlite).await;
    server.create_user(crate::support::user_body("alice@example.com")).await;
    let staff = super::staff(&server).await;
    let idp = Arc::new(TestIdp::new("https://idp.example.test/metadata"));
    let served = IdpServer::start(idp.clone(), &server.base_url, "acme", "alice@example.com");
    let mut settings = idp.settings(false);
    settings["sso_url"] = json!(served.sso_url);
    let configured = server.admin(Method::PUT, "/admin/v1/directories/acme/saml", Some(settings)).await;
    assert_eq!(configured.status, StatusCode::OK, "{}", configured.body);

    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts/lookup");
    let browser = WebDriver::start(artifacts).await;

    // 1. The lookup page sends an anonymous browser through the IdP and back.
    browser.go(&server.url("/d/acme/")).await;
    browser.wait_for_url("the search page after sign-in", |url| url.ends_with("/d/acme/")).await;
    let signed_in = browser.wait_for("the signed-in user", "#signed-in-as", |t| !t.is_empty()).await;
    assert_eq!(signed_in, ["alice@example.com"]);
    browser.screenshot("1-signed-in").await;

    // 2. Typing lists matches as one types, without submitting the form.
    browser.type_into("#q", "grace").await;
    let names = browser.wait_for("the search results", "#results .name", |t| !t.is_empty()).await;
    assert_eq!(names, ["Grace Hopper"]);
    let status = browser.texts("#status").await;
    assert_eq!(status, ["1 person found."]);
    assert!(browser.url().await.ends_with("/d/acme/?q=grace"), "the address follows the search box");
    browser.screenshot("2-search").await;

    // 3. A person's page: contact data, direct reports (one marked deactivated), groups.
    browser.click("#results a").await;
    browser
        .wait_for_url("grace's page", |url| url.ends_with(&format!("/d/acme/people/{}", staff.grace)))
        .await;
    let heading = browser.wait_for("the person's name", "#person-name", |t| !t.is_empty()).await;
    assert_eq!(heading, ["Grace Hopper"]);
    let reports = browser.texts("#reports li").await;
    assert!(reports.iter().any(|r| r == "Alice Liddell"), "{reports:?}");
    assert!(reports.iter().any(|r| r.starts_with("Dave Gone") && r.contains("Deactivated")), "{reports:?}");
    assert!(reports.iter().any(|r| r == "<script>alert(1)</script>"), "rendered as text: {reports:?}");
    assert_eq!(browser.texts("#groups li").await, ["Engineers"]);
    browser.screenshot("3-person").await;

    // 4. A direct report's page links back to the manager.
    browser.click(&format!("#reports a[href$=\"{}\"]", staff.alice)).await;
    let manager = browser.wait_for("alice's manager", "#manager a", |t| !t.is_empty()).await;
    assert_eq!(manager, ["Grace Hopper"]);
    browser.screenshot("4-report").await;
    browser.click("#manager a").await;
    browser.wait_for_url("back on grace's page", |url| url.ends_with(&staff.grace)).await;

    // 5. Searching by department lists several; a deactivated one is marked.
    browser.go(&server.url("/d/acme/")).await;
    browser.type_into("#q", "resea").await;
    let names = browser.wait_for("the department's people", "#results .name", |t| t.len() >= 2).await;
    assert!(
        names.contains(&"Alice Liddell".to_string()) && names.contains(&"Dave Gone".to_string()),
        "{names:?}"
    );
    let badges = browser.texts("#results .badge").await;
    assert_eq!(badges, ["Deactivated"]);
    browser.screenshot("5-department").await;
}
