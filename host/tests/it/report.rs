//! The weekly PDF report over a real store: nine days of simulated motors (the simulator's
//! physics on its own clock, faster than real time) run through the demo tenant's real pipeline
//! — the shipped plugins, the bearing model, the alert policy — then `edgepm report`, read back
//! by poppler (`pdftotext`, `pdffonts`, `pdftoppm`), checked against the store queried directly.
//! The PDF is kept in `<target>/test-artifacts/report-2025-W14.pdf`.

use edgepm::metrics::Metrics;
use edgepm::plugins::{HostOptions, PluginHost};
use edgepm::store::{AlertKey, Durability, SqliteStore};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

const DAY_MS: i64 = 86_400_000;
/// Sunday 2025-03-30T00:00:00Z: the day before week 2025-W14.
const START_MS: i64 = 1_743_292_800_000;
const WEEK_FROM_MS: i64 = START_MS + DAY_MS;
const WEEK_TO_MS: i64 = WEEK_FROM_MS + 7 * DAY_MS;

/// Runs `motors` through the tenant's pipeline, one window each `step_min` minutes over `days`.
fn simulate(
    data: &Path,
    store: &Arc<SqliteStore>,
    motors: &mut [edgepm::sim::Motor],
    days: f64,
    step_min: f64,
) {
    let host = PluginHost::open(
        HostOptions::new(data.join("plugins"), data.join("models")),
        store.clone(),
        Arc::new(Metrics::new()),
    )
    .expect("the demo tenant loads");
    // The demo's motors: accelerometers, four bursts a window.
    let samples = edgepm::sim::Sensor::ACCELEROMETER.default_samples();
    let readings = 4;
    let mut buf = edgepm::dataset::WindowBuffer::default();
    for motor in motors.iter_mut() {
        motor.spec.sensor = edgepm::sim::Sensor::ACCELEROMETER;
        store
            .upsert_asset(&motor.spec.tenant, &motor.spec.device, &motor.spec.asset(), START_MS)
            .expect("asset");
        let mut t = step_min * 60.0;
        while t <= days * 86_400.0 {
            buf.fill(motor, t, readings, 0.1, samples, START_MS);
            let window = buf.window(&motor.spec, samples);
            let start_ms = window.start_ms;
            let outcome = edgepm::pipeline::process_window(&host, window).expect("the pipeline runs");
            let contributions = serde_json::to_string(&outcome.score.contributions).expect("json");
            store.insert_outcome(&outcome.row(start_ms, &contributions), outcome.end_ms).expect("stored");
            store
                .record_window(&outcome.tenant, &outcome.device, outcome.end_ms, outcome.end_ms)
                .expect("device");
            t += step_min * 60.0;
        }
    }
}

fn run(program: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `Sat 5 Apr 10:30`, as the report writes times (UTC).
fn short_time(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).expect("time");
    let abbrev = |s: String| s.chars().take(3).collect::<String>();
    format!(
        "{} {} {} {:02}:{:02}",
        abbrev(t.weekday().to_string()),
        t.day(),
        abbrev(t.month().to_string()),
        t.hour(),
        t.minute()
    )
}

/// Share of pixels darker than white in a binary PGM (`P5`) image.
fn ink(pgm: &[u8]) -> f64 {
    // Header: "P5\n<w> <h>\n255\n".
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while pgm[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while !pgm[i].is_ascii_whitespace() {
            i += 1;
        }
        fields.push(String::from_utf8_lossy(&pgm[start..i]).into_owned());
    }
    assert_eq!(fields[0], "P5");
    let pixels = &pgm[i + 1..];
    pixels.iter().filter(|&&p| p < 200).count() as f64 / pixels.len().max(1) as f64
}

#[test]
#[ignore = "integration: the real pipeline over nine simulated days, poppler-utils (scripts/test.sh)"]
fn a_simulated_week_gives_a_report_naming_the_top_risk_equipment_and_listing_that_weeks_alerts() {
    let _timing = crate::support::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    edgepm::demo::prepare(&data).expect("the demo tenant");
    let store = Arc::new(SqliteStore::open(&data.join("edgepm.db"), Durability::Normal).expect("store"));
    // Six motors; two wear out over the week (defect from day ~1.5, failure on day ~7.5, after the
    // report's week ends on day 8 — the simulation runs a day either side of the week).
    let mut motors = edgepm::sim::fleet(edgepm::demo::TENANT, 6, 2, 1.5 * 86_400.0, 7.5 * 86_400.0, 11);
    simulate(&data, &store, &mut motors, 9.0, 30.0);

    // What the report must show, asked of the store directly.
    let db = rusqlite::Connection::open(data.join("edgepm.db")).expect("db");
    let top: String = db
        .query_row(
            "SELECT device FROM predictions p WHERE ts_ms = (SELECT max(ts_ms) FROM predictions q
               WHERE q.device = p.device AND ts_ms >= ?1 AND ts_ms < ?2)
             ORDER BY probability DESC LIMIT 1",
            [WEEK_FROM_MS, WEEK_TO_MS],
            |r| r.get(0),
        )
        .expect("a top device");
    let mut stmt = db
        .prepare("SELECT device, ts_ms, idx FROM alerts WHERE ts_ms >= ?1 AND ts_ms < ?2 ORDER BY ts_ms")
        .expect("alerts");
    let alerts: Vec<(String, i64, i64)> = stmt
        .query_map([WEEK_FROM_MS, WEEK_TO_MS], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("alerts")
        .collect::<Result<_, _>>()
        .expect("alerts");
    let outside: Vec<(String, i64)> = db
        .prepare("SELECT device, ts_ms FROM alerts WHERE ts_ms < ?1 OR ts_ms >= ?2")
        .expect("others")
        .query_map([WEEK_FROM_MS, WEEK_TO_MS], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("others")
        .collect::<Result<_, _>>()
        .expect("others");
    assert!(alerts.len() >= 2, "the wearing motors alerted during the week: {alerts:?}");
    assert!(!outside.is_empty(), "alerts after the week too (they must not be listed)");
    assert!(top == "MTR-001" || top == "MTR-002", "a wearing motor is the top risk: {top}");
    // One alert acknowledged (the API's path writes the same row).
    let (device, ts_ms, idx) = alerts[0].clone();
    let key = AlertKey { tenant: edgepm::demo::TENANT.into(), device, ts_ms, idx };
    store
        .acknowledge_alert(&key, "Ana Souza", "bearing greased, vibration noted", ts_ms + 3_600_000)
        .expect("ack");
    drop(store);

    let pdf = dir.path().join("reports").join("2025-W14.pdf");
    let report = |week: &str, out: &Path| {
        let args = ["report", "--week", week, "--data-dir", data.to_str().expect("utf-8"), "--out"];
        run(env!("CARGO_BIN_EXE_edgepm"), &[&args[..], &[out.to_str().expect("utf-8")]].concat())
    };
    let (ok, _, err) = report("2025-W14", &pdf);
    assert!(ok, "{err}");
    assert!(err.contains("2025-W14"), "{err}");
    let pdf = pdf.to_str().expect("utf-8");

    let (ok, info, err) = run("pdfinfo", &[pdf]);
    assert!(ok, "pdfinfo: {err}");
    let pages: usize = info
        .lines()
        .find_map(|l| l.strip_prefix("Pages:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{info}"));
    assert!(pages >= 2, "{info}");
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts");
    std::fs::copy(pdf, artifacts.join("report-2025-W14.pdf")).expect("kept");
    // (and the store it was made from, to look at or to time `edgepm report` on)
    let kept = artifacts.join("report-2025-W14.db");
    let _ = std::fs::remove_file(&kept);
    db.execute("VACUUM INTO ?1", [kept.to_str().expect("utf-8")]).expect("kept");
    assert!(info.contains("Equipment health, week 2025-W14"), "{info}");
    // Every font embedded (the report must read the same on a machine without them).
    let (ok, fonts, err) = run("pdffonts", &[pdf]);
    assert!(ok, "pdffonts: {err}");
    let rows: Vec<&str> = fonts.lines().skip(2).collect();
    assert!(!rows.is_empty() && rows.iter().all(|r| r.contains("DejaVuSans")), "{fonts}");
    assert!(
        rows.iter().all(|r| r.split_whitespace().rev().nth(4) == Some("yes")),
        "not all embedded:\n{fonts}"
    );

    let (ok, text, err) = run("pdftotext", &["-layout", pdf, "-"]);
    assert!(ok, "pdftotext: {err}");
    assert!(text.contains("Monday 31 March 2025 to Sunday 6 April 2025"), "{text}");
    // The top-risk table names the top device first.
    let top5 =
        &text[text.find("Top 5 by risk").expect("top 5")..text.find("Failure probability").expect("chart")];
    let first = top5.split_whitespace().find(|w| w.starts_with("MTR-")).expect("a device in the top 5");
    assert_eq!(first, top, "{top5}");
    // Every alert of the week is listed (time and device on one row), the others are not.
    let listing = &text[text.find("Alerts this week").expect("alert list")..];
    assert!(listing.starts_with(&format!("Alerts this week ({})", alerts.len())), "{listing}");
    for (device, ts_ms, _) in &alerts {
        let when = short_time(*ts_ms);
        assert!(
            listing.lines().any(|l| l.contains(&when) && l.contains(device.as_str())),
            "alert of {device} at {when} not listed:\n{listing}"
        );
    }
    for (device, ts_ms) in &outside {
        let when = short_time(*ts_ms);
        assert!(
            !listing.lines().any(|l| l.starts_with(&when) && l.contains(device.as_str())),
            "{when} {device} listed"
        );
    }
    assert!(listing.contains("Ana Souza"), "the acknowledgement is shown: {listing}");
    assert!(listing.contains("open"), "the other alerts are open");
    // Explanations: the contributions behind a score.
    // (a bearing-spectrum feature and its signed SHAP value, e.g. `vib_crest +0.607`)
    let words: Vec<&str> = text.split_whitespace().collect();
    assert!(
        words.windows(2).any(|w| w[0].starts_with("vib_") && w[1].starts_with('+')),
        "no contribution shown: {text}"
    );
    // The other sections.
    for section in [
        "Fleet summary",
        "Assets by site",
        "New vs old equipment",
        "Degradation",
        "Plugins and models serving",
        "bearing-spectrum-xgb",
    ] {
        assert!(text.contains(section), "{section} missing:\n{text}");
    }
    assert!(text.contains("Plant A - Campinas"), "site maps are labelled: {text}");

    // Every page renders, and none is blank.
    let prefix = dir.path().join("page");
    let (ok, _, err) = run("pdftoppm", &["-r", "40", "-gray", pdf, prefix.to_str().expect("utf-8")]);
    assert!(ok && err.trim().is_empty(), "pdftoppm: {err}");
    let mut rendered: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("page")))
        .collect();
    rendered.sort();
    assert_eq!(rendered.len(), pages, "{rendered:?}");
    for page in &rendered {
        let share = ink(&std::fs::read(page).expect("page image"));
        assert!(share > 0.005, "{} is blank ({share})", page.display());
    }
    // A week without data still makes a report, which says so.
    let quiet = dir.path().join("quiet.pdf");
    let (ok, _, err) = report("2025-W20", &quiet);
    assert!(ok, "{err}");
    let (_, text, _) = run("pdftotext", &[quiet.to_str().expect("utf-8"), "-"]);
    assert!(
        text.contains("No equipment was scored this week") && text.contains("No alert this week"),
        "{text}"
    );
    assert!(text.contains("0 of 6 known") && text.contains("Not scored this week"), "{text}");
    // Without any prediction and no week: a clear error.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).expect("dir");
    SqliteStore::open(&empty.join("edgepm.db"), Durability::Normal).expect("empty store");
    let (ok, _, err) =
        run(env!("CARGO_BIN_EXE_edgepm"), &["report", "--data-dir", empty.to_str().expect("utf-8")]);
    assert!(!ok && err.contains("no prediction"), "{err}");
    let (ok, _, err) = run(
        env!("CARGO_BIN_EXE_edgepm"),
        &["report", "--week", "2025-W54", "--data-dir", empty.to_str().expect("utf-8")],
    );
    assert!(!ok && err.contains("no week 54"), "{err}");
}
