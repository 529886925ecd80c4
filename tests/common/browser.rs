//! Driving Debian's chromium, headless, over WebDriver (`thirtyfour` + `/usr/bin/chromedriver`)
//! for the viewer's browser tests: the driver on a free 127.0.0.1 port, a browser session,
//! waiting for elements and URLs, the colour scheme, and screenshots saved under
//! `target/test-artifacts/viewer/`.
//!
//! Needs `chromium` and `chromium-driver` (`scripts/install-test-deps.sh`); without them a
//! test fails and says so rather than passing silently.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use thirtyfour::extensions::cdp::ChromeDevTools;
use thirtyfour::prelude::*;

use super::http;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

pub fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts/viewer");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir
}

/// chromedriver on a free 127.0.0.1 port; killed on drop.
pub struct Driver {
    child: Child,
    pub url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn start_chromedriver() -> Driver {
    for tool in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: the browser test needs Debian's chromium and chromium-driver. \
             Run `sudo scripts/install-test-deps.sh` (apt-get install chromium chromium-driver)."
        );
    }
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let url = format!("http://127.0.0.1:{port}");
    let client = http();
    for _ in 0..100 {
        if let Ok(r) = client.get(format!("{url}/status")).send().await
            && r.status().is_success()
        {
            return Driver { child, url };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("chromedriver did not answer on {url}");
}

pub async fn browser(driver: &Driver, profile: &Path) -> WebDriver {
    let mut caps = DesiredCapabilities::chrome();
    caps.set_binary(CHROMIUM).unwrap();
    for arg in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--lang=en-US",
    ] {
        caps.add_arg(arg).unwrap();
    }
    caps.add_arg(&format!("--user-data-dir={}", profile.display()))
        .unwrap();
    let web = WebDriver::new(&driver.url, caps)
        .await
        .expect("start chromium");
    web.set_window_rect(0, 0, 1280, 860).await.unwrap();
    web
}

/// Waits (up to 10 s) for `css` to match; returns the first match.
pub async fn wait_for(web: &WebDriver, css: &str) -> WebElement {
    for _ in 0..100 {
        if let Ok(found) = web.find(By::Css(css)).await {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{css} did not appear within 10 s at {:?}",
        web.current_url().await
    );
}

/// Waits (up to 10 s) until the page's URL contains `part`: a click that submits a form only
/// starts the navigation, and the old page still answers queries meanwhile.
pub async fn wait_for_url(web: &WebDriver, part: &str) {
    for _ in 0..100 {
        if web
            .current_url()
            .await
            .is_ok_and(|u| u.as_str().contains(part))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "URL never contained {part:?}: {:?}",
        web.current_url().await
    );
}

/// Waits (up to 10 s) until `css` matches nothing.
pub async fn wait_gone(web: &WebDriver, css: &str) {
    for _ in 0..100 {
        if web.find_all(By::Css(css)).await.unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css} still there after 10 s");
}

pub async fn color_scheme(web: &WebDriver, dark: bool) {
    let value = if dark { "dark" } else { "light" };
    ChromeDevTools::new(web.handle.clone())
        .execute_cdp_with_params(
            "Emulation.setEmulatedMedia",
            serde_json::json!({ "features": [{ "name": "prefers-color-scheme", "value": value }] }),
        )
        .await
        .expect("emulate colour scheme");
}

pub async fn shot(web: &WebDriver, name: &str) {
    // Let fonts, animations and the script's local times settle.
    tokio::time::sleep(Duration::from_millis(700)).await;
    web.screenshot(&artifacts().join(format!("{name}.png")))
        .await
        .expect("screenshot");
}
