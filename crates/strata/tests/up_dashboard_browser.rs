//! The live dashboard in a real browser: a headless Chromium (`browser/mod.rs`) opens the page
//! of a deployment that `strata up` started, and the page, not only what it is served, is
//! checked. Every role is drawn; the charts draw points as the series grow under traffic; an
//! admin logs in through the page's form and presses "kill" on api-2, whose box turns red,
//! then green again on a new pid when the supervisor has restarted it; "freeze" on api-1 shows
//! it frozen until "resume" brings it back on the same pid; "drain" on api-2 shows it drained
//! by lb-1 until "undrain" puts it back; a chaos run started from the page's form is shown
//! until its verdict; the alerts panel shows the
//! burn-rate alert prometheus-1 fires for a latency objective set out of reach; a trace pressed
//! in the slowest list is drawn span by span, and a request traced by its sender is drawn from
//! the balancer and the API server. At a phone's width the page fits the screen, its tiers
//! stack, and every button is large enough to tap.
//!
//! Chromium is needed (`./scripts/test` installs Debian's `chromium`); without it the test
//! fails and says so. With `STRATA_SCREENSHOTS=DIR` it also writes the screenshots that
//! docs/observability.md shows (`dashboard-desktop.png`, `dashboard-phone.png`,
//! `dashboard-phone-alerts-trace.png`).

mod browser;
mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use browser::Browser;
use common::{Cleanup, admin_client, role, status_json, up_topology};

const TOPOLOGY: &str = "name = \"watched\"\n[lb]\n[api]\ncount = 2\n[workers]\ncount = 1\n[observe]\ndashboard = true\nprometheus = true\nscrape_interval_secs = 1\ntrace_sample = 1.0\n\
    [observe.slo.lb]\nlatency_ms = 0.5\nlatency_target = 99.9\n";
const ROLES: [&str; 6] = [
    "lb-1",
    "api-1",
    "api-2",
    "worker-1",
    "prometheus-1",
    "dashboard-1",
];

/// The box of role `name` in the page's graph, as a JavaScript expression.
fn role_box(name: &str) -> String {
    format!("document.querySelector('#graph .role[data-role=\"{name}\"]')")
}

/// Whether every role of [`ROLES`] is drawn green, as a JavaScript expression.
fn all_ready() -> String {
    let names = serde_json::to_string(&ROLES).expect("JSON");
    format!(
        "{names}.every((n) => document.querySelector('#graph .role[data-role=\"' + n + '\"]')?.classList.contains('ready'))"
    )
}

/// `GET /users?limit=1` through the balancer at `lb`, in trace `trace_id`, sampled.
fn send_traced(rt: &tokio::runtime::Runtime, lb: &str, trace_id: &str) {
    let sent = rt.block_on(async {
        reqwest::Client::new()
            .get(format!("http://{lb}/users?limit=1"))
            .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    assert_eq!(sent.as_ref().ok(), Some(&200), "{sent:?}");
}

#[test]
fn in_a_browser_the_dashboard_draws_every_role_and_its_charts_and_a_killed_server_goes_red_then_green()
 {
    // Fail at once, before starting anything, when there is no browser.
    let _ = browser::chromium();
    let (_tmp, dir) = up_topology(TOPOLOGY);
    let _cleanup = Cleanup(&dir);
    let status = status_json(&dir);
    let dash = role(&status, "dashboard-1")["addrs"]["http"]
        .as_str()
        .expect("dashboard-1's address")
        .to_owned();
    let lb = role(&status, "lb-1")["addrs"]["http"]
        .as_str()
        .expect("lb-1's address")
        .to_owned();

    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let _ = rt.block_on(admin_client(&dir, &lb));
    // Traffic through the balancer for the charts, until the test ends.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, lb) = (stop.clone(), lb.clone());
        rt.spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .expect("client");
            while !stop.load(Ordering::Relaxed) {
                let _ = http.get(format!("http://{lb}/users?limit=1")).send().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let mut page = Browser::launch(1280, 900, false);
    page.goto(&format!("http://{dash}/"));
    assert_eq!(page.eval("document.title"), "Strata live dashboard");

    // Every role of the deployment is drawn, green.
    page.wait_for(
        &all_ready(),
        Duration::from_secs(30),
        "every role drawn ready",
    );
    let drawn =
        page.eval("[...document.querySelectorAll('#graph .role')].map((e) => e.dataset.role)");
    for name in ROLES {
        assert!(
            drawn
                .as_array()
                .is_some_and(|a| a.iter().any(|n| n == name)),
            "{name} is not drawn: {drawn}"
        );
    }
    assert!(
        page.eval("document.getElementById('conn').textContent")
            .as_str()
            .is_some_and(|c| c.starts_with("live")),
        "the page says it is live"
    );

    // The charts receive data: the api tier's series grows, and its requests/s chart draws a
    // line through several points, the latest above zero.
    let series_len = "(latest?.tiers.find((t) => t.tier === 'api')?.series.length ?? 0)";
    let before = page
        .wait_for(
            &format!("{series_len} >= 2 && {series_len}"),
            Duration::from_secs(30),
            "two points in the api tier's series",
        )
        .as_u64()
        .expect("a length");
    page.wait_for(
        &format!("{series_len} > {before}"),
        Duration::from_secs(10),
        "the api tier's series to grow",
    );
    page.wait_for(
        "(document.querySelector('.chart[data-series=\"api requests/s\"] path')?.getAttribute('d') ?? '').split('L').length >= 3",
        Duration::from_secs(10),
        "the api requests/s chart to draw a line through three points",
    );
    page.wait_for(
        "(latest?.tiers.find((t) => t.tier === 'api')?.series.at(-1)?.rps ?? 0) > 0",
        Duration::from_secs(30),
        "traffic in the api tier's latest point",
    );

    // An admin logs in through the page's form.
    page.type_into("document.getElementById('email')", common::ADMIN_EMAIL);
    page.type_into(
        "document.getElementById('password')",
        common::ADMIN_PASSWORD,
    );
    page.click("document.querySelector('#login button')");
    page.wait_for(
        "document.getElementById('message').textContent.startsWith('Logged in')",
        Duration::from_secs(10),
        "the page to say it is logged in",
    );

    // Every rendering of api-2's box is recorded, however briefly it lasts.
    page.eval(
        "window.seenApi2 = []; new MutationObserver(() => { const e = document.querySelector('#graph .role[data-role=\"api-2\"]'); \
         if (e) window.seenApi2.push(e.className + ' ' + e.dataset.pid); }).observe(document.getElementById('graph'), {childList: true, subtree: true}); true",
    );
    let old_pid = page.eval(&format!("{}.dataset.pid", role_box("api-2")));
    let old_pid = old_pid.as_str().expect("api-2's pid").to_owned();
    assert!(!old_pid.is_empty(), "api-2 has a pid");

    // "kill" on api-2 (the page asks to confirm; the browser accepts).
    page.click(&format!(
        "{}.querySelector('button[data-action=\"kill\"]')",
        role_box("api-2")
    ));
    page.wait_for(
        "document.getElementById('message').textContent.startsWith('SIGKILL sent to api-2')",
        Duration::from_secs(10),
        "the page to say api-2 was killed",
    );
    page.wait_for(
        "window.seenApi2.some((c) => c.split(' ').includes('down'))",
        Duration::from_secs(10),
        "api-2's box to turn red",
    );
    page.wait_for(
        &format!(
            "(() => {{ const e = {}; return e?.classList.contains('ready') && e.dataset.pid !== '' && e.dataset.pid !== '{old_pid}'; }})()",
            role_box("api-2")
        ),
        Duration::from_secs(60),
        "api-2's box to turn green again on a new pid",
    );

    // "freeze" on api-1: its box turns frozen, and its button becomes "resume", which brings
    // it back on the same pid.
    let api1 = role_box("api-1");
    let pid = page.eval(&format!("{api1}.dataset.pid"));
    page.click(&format!(
        "{api1}.querySelector('button[data-action=\"freeze\"]')"
    ));
    page.wait_for(
        &format!("{api1}.classList.contains('frozen')"),
        Duration::from_secs(10),
        "api-1's box to show it frozen",
    );
    page.click(&format!(
        "{api1}.querySelector('button[data-action=\"resume\"]')"
    ));
    page.wait_for(
        &format!("{api1}.classList.contains('ready') && {api1}.dataset.pid === {pid}"),
        Duration::from_secs(10),
        "api-1's box to turn green again on the same pid",
    );

    // "drain" on api-2: lb-1 stops sending it new requests and its box shows it drained, with
    // an "undrain" button that puts it back.
    let api2 = role_box("api-2");
    page.click(&format!(
        "{api2}.querySelector('button[data-action=\"drain\"]')"
    ));
    page.wait_for(
        "document.getElementById('message').textContent.startsWith('api-2 drained by lb-1')",
        Duration::from_secs(10),
        "the page to say lb-1 drains api-2",
    );
    page.wait_for(
        &format!(
            "{api2}.classList.contains('drained') && {api2}.textContent.includes('drained by lb-1')"
        ),
        Duration::from_secs(10),
        "api-2's box to show it drained",
    );
    page.click(&format!(
        "{api2}.querySelector('button[data-action=\"undrain\"]')"
    ));
    page.wait_for(
        &format!("{api2}.classList.contains('ready') && !!{api2}.querySelector('button[data-action=\"drain\"]')"),
        Duration::from_secs(10),
        "api-2's box to turn green again with its drain button",
    );

    // A chaos run from the page (5 s, no faults): the panel shows it running, then its
    // verdict, with the start button usable again.
    page.eval(
        "document.getElementById('chaos-seconds').value = '5'; document.getElementById('chaos-rate').value = '5'; \
         document.getElementById('chaos-faults').checked = false; true",
    );
    page.click("document.getElementById('chaos-start')");
    page.wait_for(
        "document.getElementById('message').textContent.startsWith('chaos run started')",
        Duration::from_secs(10),
        "the page to say the chaos run started",
    );
    page.wait_for(
        "document.querySelector('#chaos [data-chaos-state=\"passed\"]') !== null && !document.getElementById('chaos-start').disabled \
         && document.getElementById('chaos').textContent.includes('lost 0')",
        Duration::from_secs(120),
        "the chaos panel to show the run passed with nothing lost",
    );

    // The alerts panel: the balancer's latency objective (99.9 % of requests under 0.5 ms)
    // cannot be met, so its fast-burn alert fires once Prometheus has scraped some traffic,
    // and the panel draws it.
    let firing = page.wait_for(
        "!document.getElementById('alerts-panel').hidden && [...document.querySelectorAll('#alerts tbody tr')]\
         .map((r) => [...r.cells].map((c) => c.textContent)).find((c) => c[0] === 'firing' && c[1] === 'SloFastBurn')",
        Duration::from_secs(90),
        "the alerts panel to show lb latency's SloFastBurn firing",
    );
    assert_eq!(firing[2], "lb latency", "{firing}");
    assert_eq!(firing[3], "page", "{firing}");

    // A trace of the slowest list, pressed: its spans drawn, from every role the list names.
    // Each role keeps its most recent and slowest traces only, and the list is five seconds
    // old at most, so a trace pressed may be gone (the view says so): then the next listed is
    // pressed, until the deadline.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tried = Vec::new();
    loop {
        let listed = page.wait_for(
            &format!(
                "[...document.querySelectorAll('#traces tr')].map((r) => [r.querySelector('button[data-trace]')?.dataset.trace, r.cells[4]?.textContent]).find((r) => r[0] && !{}.includes(r[0]))",
                serde_json::to_string(&tried).expect("JSON")
            ),
            Duration::from_secs(30),
            "a trace in the slowest list not pressed yet",
        );
        let (id, roles) = (
            listed[0].as_str().expect("a trace id").to_owned(),
            listed[1].as_str().unwrap_or("").to_owned(),
        );
        page.click(&format!(
            "document.querySelector('#traces button[data-trace=\"{id}\"]')"
        ));
        let drawn = page.wait_for(
            &format!(
                "(() => {{ const spans = [...document.querySelectorAll('#trace-spans .span')].map((e) => e.dataset.role); \
                 const failed = document.querySelector('#trace-spans .error')?.textContent; \
                 return !document.getElementById('trace-panel').hidden && document.getElementById('trace-id').textContent === '{id}' \
                 && (spans.length > 0 || failed) && {{spans, failed}}; }})()"
            ),
            Duration::from_secs(10),
            "the pressed trace's spans",
        );
        if drawn["failed"]
            .as_str()
            .is_some_and(|f| f.starts_with("Trace not found"))
        {
            assert!(
                Instant::now() < deadline,
                "every trace pressed was gone: {tried:?}"
            );
            tried.push(id);
            continue;
        }
        assert!(drawn["failed"].is_null(), "{drawn}");
        for role in roles.split(", ").filter(|r| !r.is_empty()) {
            assert!(
                drawn["spans"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|r| r == role)),
                "{role} kept a part of {id}, but none is drawn: {drawn}"
            );
        }
        break;
    }
    // A request traced by its sender: the view draws the balancer's span and the API server's
    // under it, each bar placed on the trace's time line.
    let traced = "0af7651916cd43dd8448eb211c80319c";
    send_traced(&rt, &lb, traced);
    let roles = page.wait_for(
        &format!(
            "(async () => {{ await showTrace('{traced}'); const r = [...document.querySelectorAll('#trace-spans .span')].map((e) => e.dataset.role); \
             return r.includes('lb-1') && r.some((x) => x.startsWith('api-')) && r; }})()"
        ),
        Duration::from_secs(10),
        "the traced request's spans from lb-1 and an API server",
    );
    let bars = page.eval(
        "[...document.querySelectorAll('#trace-spans .bar')].every((b) => b.getBoundingClientRect().width >= 2)",
    );
    assert_eq!(bars, true, "every span has a bar: {roles}");

    // The screenshots docs/observability.md shows, when asked for: after a minute of traffic,
    // with traces listed.
    let shots = std::env::var_os("STRATA_SCREENSHOTS").map(PathBuf::from);
    if let Some(shots) = &shots {
        page.wait_for(
            &format!("{series_len} >= 60 && latest.traces.length > 0"),
            Duration::from_secs(120),
            "a minute of points and some traces",
        );
        page.screenshot(&shots.join("dashboard-desktop.png"), true);
    }

    // At a phone's width: nothing wider than the screen, the tiers one under another, and
    // every button shown at least 44 px high.
    let mut phone = Browser::launch(390, 844, true);
    phone.goto(&format!("http://{dash}/"));
    phone.wait_for(&all_ready(), Duration::from_secs(30), "every role drawn");
    phone.wait_for(
        "document.querySelectorAll('.chart path').length > 0",
        Duration::from_secs(10),
        "the charts drawn",
    );
    // Sent again: under traffic, each role's most recent traces last seconds only.
    let traced = "1bf7651916cd43dd8448eb211c80319c";
    send_traced(&rt, &lb, traced);
    phone.wait_for(
        &format!(
            "(async () => {{ await showTrace('{traced}'); return document.querySelectorAll('#trace-spans .span').length > 1; }})()"
        ),
        Duration::from_secs(10),
        "the traced request's spans on the phone",
    );
    let width = phone.eval("[document.documentElement.scrollWidth, window.innerWidth]");
    assert!(
        width[0].as_u64() <= width[1].as_u64(),
        "the page is wider than a phone's screen: {width}"
    );
    let stacked = phone.eval(
        "(() => { const t = [...document.querySelectorAll('#graph .tier')].map((e) => e.getBoundingClientRect()); \
         return t.every((r, i) => i === 0 || r.top >= t[i - 1].bottom); })()",
    );
    assert_eq!(stacked, true, "the tiers are stacked");
    let small = phone.eval(
        "[...document.querySelectorAll('button')].filter((b) => b.offsetParent !== null && b.getBoundingClientRect().height < 44).map((b) => b.textContent)",
    );
    assert_eq!(
        small,
        serde_json::json!([]),
        "buttons too small to tap on a phone"
    );
    if let Some(shots) = &shots {
        phone.screenshot(&shots.join("dashboard-phone.png"), false);
        phone.eval("document.getElementById('alerts-panel').scrollIntoView(); true");
        phone.screenshot(&shots.join("dashboard-phone-alerts-trace.png"), false);
    }

    stop.store(true, Ordering::Relaxed);
    let _ = rt.block_on(traffic);
}
