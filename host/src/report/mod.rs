//! The weekly equipment-health report (PDF): the dashboard's views for one ISO week, as static
//! charts and tables — fleet summary, top 5 by risk with the contributions behind each score,
//! the probability curves with their alerts, the assets by site, new vs old equipment, every
//! alert of the week with its explanation and acknowledgement, the degradation findings, and the
//! plugin and model versions that served each tenant.
//!
//! Everything comes from the local store (a read-only connection is enough), in UTC; a week is
//! Monday 00:00 to the next Monday 00:00. Made by `edgepm report`, `GET /api/v1/reports/{week}`
//! (the dashboard's download) and at the end of `edgepm demo`. Laid out with krilla and plotters
//! ([`layout`], [`charts`]): see `docs/architecture.md` for why not typst.

pub mod charts;
mod layout;

use crate::clock::rfc3339;
use crate::store::{
    AlertFilter, AlertView, Degradation, DegradationQuery, DevicePeriod, ServedVersions, SqliteStore,
};
use layout::{Cell, Column, INK, Layout, MUTED, WIDTH, Weight};
use std::fmt;
use time::{Date, OffsetDateTime, Weekday};

const DAY_MS: i64 = 86_400_000;
const WEEK_MS: i64 = 7 * DAY_MS;
/// Equipment ranked in the top table and drawn on the chart.
pub const TOP: usize = 5;
/// Alerts listed in full; beyond, the report says how many more there were.
pub const ALERTS_LISTED: usize = 400;
/// Height of the probability chart, points.
const CHART_H: f32 = 210.0;
/// Characters of an alert's text shown (its explanation is the contributions column).
const BODY_SHOWN: usize = 100;
/// The band the report calls high risk: the default alert threshold. A tenant may set its own
/// (tenant `ai4i`: 0.61); its alerts, the chart's dots, are where its policy raised them.
pub const HIGH_RISK: f64 = 0.8;

/// An ISO 8601 week, `2025-W14` (made by parsing or [`IsoWeek::containing`]: always one that
/// exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IsoWeek {
    year: i32,
    week: u8,
}

impl IsoWeek {
    /// The week `ms` (since the epoch, UTC) falls in.
    pub fn containing(ms: i64) -> IsoWeek {
        let date = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
            .map(|t| t.date())
            .unwrap_or(Date::MIN);
        let (year, week, _) = date.to_iso_week_date();
        IsoWeek { year, week }
    }

    fn monday(&self) -> Date {
        Date::from_iso_week_date(self.year, self.week, Weekday::Monday).expect("checked when made")
    }

    /// Monday 00:00 UTC.
    pub fn start_ms(&self) -> i64 {
        self.monday().midnight().assume_utc().unix_timestamp() * 1000
    }

    /// The next Monday 00:00 UTC (exclusive).
    pub fn end_ms(&self) -> i64 {
        self.start_ms() + WEEK_MS
    }
}

impl fmt::Display for IsoWeek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-W{:02}", self.year, self.week)
    }
}

impl std::str::FromStr for IsoWeek {
    type Err = String;

    fn from_str(s: &str) -> Result<IsoWeek, String> {
        let bad = || format!("{s:?} is not an ISO week such as 2025-W14");
        let (year, week) = s.split_once("-W").or_else(|| s.split_once("-w")).ok_or_else(bad)?;
        let year: i32 = year.parse().map_err(|_| bad())?;
        let week: u8 = week.parse().map_err(|_| bad())?;
        Date::from_iso_week_date(year, week, Weekday::Monday)
            .map_err(|_| format!("{year} has no week {week} (ISO weeks run 1 to 52 or 53)"))?;
        Ok(IsoWeek { year, week })
    }
}

/// One curve of the chart.
pub struct DeviceCurve {
    pub tenant: String,
    pub device: String,
    /// (window end, highest probability of the bucket).
    pub points: Vec<(i64, f64)>,
}

/// What the report shows, read from the store.
pub struct WeekReport {
    pub week: IsoWeek,
    pub from_ms: i64,
    pub to_ms: i64,
    pub generated_ms: i64,
    /// The newest prediction of the week (`None`: none that week).
    pub data_through_ms: Option<i64>,
    /// Devices scored that week, highest risk first (newest probability, then peak).
    pub devices: Vec<DevicePeriod>,
    /// Devices the store knows that were not scored that week.
    pub silent: Vec<(String, String)>,
    pub curves: Vec<DeviceCurve>,
    /// The week's alerts, oldest first (at most [`ALERTS_LISTED`]).
    pub alerts: Vec<AlertView>,
    /// How many alerts the week had in all.
    pub alert_total: usize,
    pub acknowledged_total: usize,
    pub degradation: Degradation,
    pub versions: Vec<ServedVersions>,
}

impl WeekReport {
    /// Reads the week from the store.
    pub fn gather(store: &SqliteStore, week: IsoWeek, now_ms: i64) -> rusqlite::Result<WeekReport> {
        let (from_ms, to_ms) = (week.start_ms(), week.end_ms());
        let mut devices = store.device_periods(from_ms, to_ms)?;
        devices.sort_by(|a, b| {
            b.latest
                .probability
                .total_cmp(&a.latest.probability)
                .then(b.peak.probability.total_cmp(&a.peak.probability))
                .then_with(|| (&a.tenant, &a.device).cmp(&(&b.tenant, &b.device)))
        });
        let silent = store
            .devices(None, None)?
            .into_iter()
            .filter(|d| !devices.iter().any(|p| p.tenant == d.tenant && p.device == d.device))
            .map(|d| (d.tenant, d.device))
            .collect();
        let mut curves = Vec::new();
        for d in devices.iter().take(TOP) {
            let series = store.prediction_series(&d.tenant, &d.device, from_ms, to_ms - 1, 400)?;
            curves.push(DeviceCurve {
                tenant: d.tenant.clone(),
                device: d.device.clone(),
                points: series.points.iter().map(|p| (p.ts_ms, p.probability)).collect(),
            });
        }
        let (alert_total, acknowledged_total) = store.alert_counts(from_ms, to_ms)?;
        let (alert_total, acknowledged_total) = (alert_total as usize, acknowledged_total as usize);
        let alerts = store.alerts(&AlertFilter {
            from_ms: Some(from_ms),
            to_ms: Some(to_ms - 1),
            limit: ALERTS_LISTED as u32,
            oldest_first: true,
            ..AlertFilter::default()
        })?;
        let data_through_ms = devices.iter().map(|d| d.latest.ts_ms).max();
        // Degradation as the week ended, or as far as the data goes in a week still running.
        let as_of_ms = match store.newest_window_ms()? {
            Some(n) if n >= from_ms && n < to_ms => n,
            _ => to_ms - 1,
        };
        let degradation = store
            .degradation(&DegradationQuery { as_of_ms: Some(as_of_ms), ..DegradationQuery::default() })?;
        let versions = store.versions_served(from_ms, to_ms)?;
        Ok(WeekReport {
            week,
            from_ms,
            to_ms,
            generated_ms: now_ms,
            data_through_ms,
            devices,
            silent,
            curves,
            alerts,
            alert_total,
            acknowledged_total,
            degradation,
            versions,
        })
    }

    /// The PDF.
    pub fn render(&self) -> anyhow::Result<Vec<u8>> {
        let mut l = Layout::new(format!("edgepm · equipment health · week {}", self.week));
        let last_day = self.to_ms - DAY_MS;
        l.title(
            &format!("Equipment health — week {}", self.week),
            &format!(
                "{} to {} (UTC) · generated {} by edgepm {}",
                long_date(self.from_ms),
                long_date(last_day),
                rfc3339(self.generated_ms - self.generated_ms % 1000),
                env!("CARGO_PKG_VERSION")
            ),
        );
        self.summary(&mut l);
        self.top(&mut l);
        self.chart(&mut l)?;
        self.sites(&mut l)?;
        self.ages(&mut l)?;
        self.alert_list(&mut l);
        self.degradation_findings(&mut l);
        self.versions_served(&mut l);
        l.finish(&format!("Equipment health, week {}", self.week))
    }

    fn summary(&self, l: &mut Layout) {
        l.heading("Fleet summary", 60.0);
        let mut tenants: Vec<&str> = self.devices.iter().map(|d| d.tenant.as_str()).collect();
        tenants.sort_unstable();
        tenants.dedup();
        let windows: u64 = self.devices.iter().map(|d| d.windows).sum();
        let failing: u64 = self.devices.iter().map(|d| d.failure_windows).sum();
        let high: Vec<&str> = self
            .devices
            .iter()
            .filter(|d| d.latest.probability >= HIGH_RISK)
            .map(|d| d.device.as_str())
            .collect();
        let elevated =
            self.devices.iter().filter(|d| (0.5..HIGH_RISK).contains(&d.latest.probability)).count();
        let peak = self.devices.iter().max_by(|a, b| a.peak.probability.total_cmp(&b.peak.probability));
        let degrading: Vec<&str> = self.degradation.degrading.iter().map(|t| t.device.as_str()).collect();
        let mut facts = vec![
            (
                "Equipment scored".to_string(),
                format!(
                    "{} of {} known ({} {})",
                    self.devices.len(),
                    self.devices.len() + self.silent.len(),
                    if tenants.len() == 1 { "tenant" } else { "tenants" },
                    if tenants.is_empty() { "–".to_string() } else { tenants.join(", ") }
                ),
            ),
            ("Windows scored".to_string(), format!("{windows} ({failing} called a failure)")),
            (
                "Alerts".to_string(),
                format!(
                    "{} ({} acknowledged, {} open)",
                    self.alert_total,
                    self.acknowledged_total,
                    self.alert_total - self.acknowledged_total
                ),
            ),
            (
                format!("High risk at week end (≥ {:.0} %)", HIGH_RISK * 100.0),
                if high.is_empty() { "none".into() } else { high.join(", ") },
            ),
            ("Elevated (50 to 80 %)".to_string(), elevated.to_string()),
            (
                "Highest probability".to_string(),
                match peak {
                    Some(d) => {
                        format!("{} {} on {}", d.device, pct(d.peak.probability), short_time(d.peak.ts_ms))
                    }
                    None => "–".into(),
                },
            ),
            (
                format!("Vibration rising ≥ {:.0} %", self.degradation.percent),
                if degrading.is_empty() {
                    format!("none of {} judged", self.degradation.judged.len())
                } else {
                    degrading.join(", ")
                },
            ),
            (
                "Data through".to_string(),
                self.data_through_ms.map_or("no prediction this week".into(), short_time),
            ),
        ];
        if !self.silent.is_empty() {
            let names: Vec<String> = self.silent.iter().map(|(t, d)| format!("{d} ({t})")).collect();
            facts.push(("Not scored this week".to_string(), names.join(", ")));
        }
        l.facts(&facts);
    }

    fn top(&self, l: &mut Layout) {
        l.heading(&format!("Top {TOP} by risk"), 60.0);
        if self.devices.is_empty() {
            l.paragraph("No equipment was scored this week.", 9.0, Weight::Regular, MUTED);
            return;
        }
        let columns = [
            Column::left("Equipment", 130.0),
            Column::right("At week end", 66.0),
            Column::left("Peak", 100.0),
            Column::left("Why (contributions to the last score)", WIDTH - 296.0),
        ];
        let rows: Vec<Vec<Cell>> = self
            .devices
            .iter()
            .take(TOP)
            .map(|d| {
                vec![
                    Cell::new(format!("{}\n{}{}", d.device, d.tenant, asset_line(&d.asset))),
                    Cell::colored(pct(d.latest.probability), charts::risk_color(Some(d.latest.probability))),
                    Cell::new(format!("{} on {}", pct(d.peak.probability), short_time(d.peak.ts_ms))),
                    Cell::new(contributions(&d.contributions, 4)),
                ]
            })
            .collect();
        l.table(&columns, &rows);
    }

    fn chart(&self, l: &mut Layout) -> anyhow::Result<()> {
        l.heading("Failure probability", CHART_H);
        if self.curves.is_empty() {
            l.paragraph("No predictions this week.", 9.0, Weight::Regular, MUTED);
            return Ok(());
        }
        let days = |ms: i64| (ms - self.from_ms) as f64 / DAY_MS as f64;
        let curves: Vec<charts::Curve> = self
            .curves
            .iter()
            .map(|c| charts::Curve {
                name: c.device.clone(),
                points: c.points.iter().map(|&(t, p)| (days(t), p)).collect(),
                alerts: self
                    .alerts
                    .iter()
                    .filter(|a| a.tenant == c.tenant && a.device == c.device)
                    .map(|a| (days(a.ts_ms), a.probability))
                    .collect(),
            })
            .collect();
        let from = self.from_ms;
        let day = move |d: usize| short_day(from + d as i64 * DAY_MS);
        let svg = charts::probability(&curves, 7.0, &day, HIGH_RISK, (WIDTH as u32, CHART_H as u32))?;
        l.svg(&svg, 0.0, WIDTH, CHART_H)?;
        l.below(CHART_H);
        l.paragraph(
            &format!(
                "The {} highest-risk equipment; each point is the highest probability of its interval, dots are alerts (at each tenant's own threshold).",
                self.curves.len()
            ),
            7.5,
            Weight::Regular,
            MUTED,
        );
        Ok(())
    }

    fn sites(&self, l: &mut Layout) -> anyhow::Result<()> {
        let mut sites: Vec<(String, Vec<charts::Marker>)> = Vec::new();
        for d in &self.devices {
            let site = d.asset.get("site").and_then(|v| v.as_str()).unwrap_or("(no site)").to_string();
            let coord = |k: &str| d.asset.get(k).and_then(|v| v.as_str()).and_then(|v| v.parse::<f64>().ok());
            let (Some(lat), Some(lon)) = (coord("lat"), coord("lon")) else { continue };
            let marker =
                charts::Marker { label: d.device.clone(), lat, lon, probability: Some(d.latest.probability) };
            match sites.iter_mut().find(|(s, _)| *s == site) {
                Some((_, m)) => m.push(marker),
                None => sites.push((site, vec![marker])),
            }
        }
        sites.sort_by(|a, b| a.0.cmp(&b.0));
        let (w, h) = ((WIDTH - 16.0) / 3.0, 150.0);
        l.heading("Assets by site", h + 20.0);
        if sites.is_empty() {
            l.paragraph(
                "No equipment with a position (lat/lon in its asset record).",
                9.0,
                Weight::Regular,
                MUTED,
            );
            return Ok(());
        }
        for row in sites.chunks(3) {
            l.keep(h);
            for (k, (site, markers)) in row.iter().enumerate() {
                let svg = charts::site_map(site, markers, (w as u32, h as u32))?;
                l.svg(&svg, k as f32 * (w + 8.0), w, h)?;
            }
            l.below(h + 4.0);
        }
        l.paragraph(
            "Positions from the asset registry (lat/lon); colour: probability at week end — green below 50 %, amber to 80 %, red above.",
            7.5,
            Weight::Regular,
            MUTED,
        );
        Ok(())
    }

    fn ages(&self, l: &mut Layout) -> anyhow::Result<()> {
        const BANDS: [(&str, f64, f64); 3] = [
            ("under 3 years", 0.0, 3.0),
            ("3 to 6 years", 3.0, 6.0),
            ("6 years or more", 6.0, f64::INFINITY),
        ];
        let mut rows: Vec<(String, usize, f64, usize, usize)> = BANDS
            .iter()
            .map(|b| (b.0.to_string(), 0, 0.0, 0, 0))
            .chain([("unknown".to_string(), 0, 0.0, 0, 0)])
            .collect();
        for d in &self.devices {
            let age = d
                .asset
                .get("install_date")
                .and_then(|v| v.as_str())
                .and_then(install_ms)
                .map(|ms| (self.to_ms - ms) as f64 / (365.25 * DAY_MS as f64));
            let i = match age {
                Some(a) if a >= 0.0 => BANDS.iter().position(|b| a >= b.1 && a < b.2).unwrap_or(BANDS.len()),
                _ => BANDS.len(),
            };
            let r = &mut rows[i];
            r.1 += 1;
            r.2 += d.latest.probability;
            r.3 += usize::from(d.latest.is_failure);
            r.4 += self.alerts_of(d).count();
        }
        rows.retain(|r| r.1 > 0);
        let h = 30.0 * rows.len() as f32 + 26.0;
        l.heading("New vs old equipment", h + 40.0);
        if rows.is_empty() {
            l.paragraph("No equipment was scored this week.", 9.0, Weight::Regular, MUTED);
            return Ok(());
        }
        let bands: Vec<charts::Band> = rows
            .iter()
            .map(|r| charts::Band { label: r.0.clone(), assets: r.1, mean: Some(r.2 / r.1 as f64) })
            .collect();
        let svg = charts::age_bands(&bands, (WIDTH as u32, h as u32))?;
        l.svg(&svg, 0.0, WIDTH, h)?;
        l.below(h + 4.0);
        let columns = [
            Column::left("Installed", 130.0),
            Column::right("Equipment", 70.0),
            Column::right("Mean probability at week end", 140.0),
            Column::right("Failing at week end", 90.0),
            Column::right("Alerts", WIDTH - 430.0),
        ];
        let table: Vec<Vec<Cell>> = rows
            .iter()
            .map(|r| {
                vec![
                    Cell::new(r.0.clone()),
                    Cell::new(r.1.to_string()),
                    Cell::new(pct(r.2 / r.1 as f64)),
                    Cell::new(r.3.to_string()),
                    Cell::new(r.4.to_string()),
                ]
            })
            .collect();
        l.table(&columns, &table);
        l.paragraph(
            "Age at the week's end, from install_date in the asset registry.",
            7.5,
            Weight::Regular,
            MUTED,
        );
        Ok(())
    }

    fn alerts_of<'a>(&'a self, d: &'a DevicePeriod) -> impl Iterator<Item = &'a AlertView> + 'a {
        self.alerts.iter().filter(move |a| a.tenant == d.tenant && a.device == d.device)
    }

    fn alert_list(&self, l: &mut Layout) {
        l.heading(&format!("Alerts this week ({})", self.alert_total), 110.0);
        if self.alerts.is_empty() {
            l.paragraph("No alert this week.", 9.0, Weight::Regular, MUTED);
            return;
        }
        let columns = [
            Column::left("When (UTC)", 74.0),
            Column::left("Equipment", 62.0),
            Column::right("Prob.", 38.0),
            Column::left("Alert", 142.0),
            Column::left("Why", 112.0),
            Column::left("Acknowledged", WIDTH - 428.0),
        ];
        let rows: Vec<Vec<Cell>> = self
            .alerts
            .iter()
            .map(|a| {
                // Its lines run on, so a row stays a few lines high.
                let flat =
                    a.body.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" · ");
                let mut body: String = flat.chars().take(BODY_SHOWN).collect();
                if body.len() < flat.len() {
                    body = format!("{}…", body.trim_end());
                }
                let ack = match &a.acknowledged {
                    Some(k) => Cell::new(format!(
                        "{} on {}{}",
                        k.by,
                        short_time(k.at_ms),
                        if k.note.is_empty() { String::new() } else { format!(": {}", k.note) }
                    )),
                    None => Cell::colored("open", charts::HIGH),
                };
                vec![
                    Cell::new(short_time(a.ts_ms)),
                    Cell::new(format!("{}\n{}", a.device, a.tenant)),
                    Cell::colored(pct(a.probability), charts::risk_color(Some(a.probability))),
                    Cell::new(format!("[{}] {}\n{}", a.severity, a.subject, body)),
                    Cell::new(contributions(&a.contributions, 3)),
                    ack,
                ]
            })
            .collect();
        l.table(&columns, &rows);
        if self.alert_total > self.alerts.len() {
            l.paragraph(
                &format!(
                    "{} more alerts this week are not listed; GET /api/v1/alerts?from=…&to=… has them all.",
                    self.alert_total - self.alerts.len()
                ),
                8.0,
                Weight::Regular,
                MUTED,
            );
        }
    }

    fn degradation_findings(&self, l: &mut Layout) {
        let d = &self.degradation;
        l.heading("Degradation", 50.0);
        l.paragraph(
            &format!(
                "Equipment whose median {} over the {} days to {} is at least {} % above its median over the {} days before (periods need {} windows to be judged).",
                d.feature,
                d.days,
                d.as_of_ms.map_or("–".into(), short_time),
                d.percent,
                d.days,
                DegradationQuery::default().min_windows
            ),
            8.5,
            Weight::Regular,
            INK,
        );
        l.space(3.0);
        if d.degrading.is_empty() {
            l.paragraph(&format!("None of the {} equipment judged.", d.judged.len()), 9.0, Weight::Bold, INK);
        } else {
            let columns = [
                Column::left("Equipment", 150.0),
                Column::right("Baseline", 90.0),
                Column::right("Recent", 90.0),
                Column::right("Rise", 70.0),
                Column::right("Windows (baseline / recent)", WIDTH - 400.0),
            ];
            let rows: Vec<Vec<Cell>> = d
                .degrading
                .iter()
                .map(|t| {
                    vec![
                        Cell::new(format!("{} ({})", t.device, t.tenant)),
                        Cell::new(t.baseline.map_or("–".into(), |v| format!("{v:.3}"))),
                        Cell::new(t.recent.map_or("–".into(), |v| format!("{v:.3}"))),
                        Cell::colored(
                            t.rise_percent.map_or("–".into(), |r| format!("{r:+.1} %")),
                            charts::HIGH,
                        ),
                        Cell::new(format!("{} / {}", t.baseline_windows, t.recent_windows)),
                    ]
                })
                .collect();
            l.table(&columns, &rows);
        }
        if !d.not_enough_data.is_empty() {
            let names: Vec<&str> = d.not_enough_data.iter().map(|t| t.device.as_str()).collect();
            l.paragraph(
                &format!("Not enough data to judge: {}.", names.join(", ")),
                8.0,
                Weight::Regular,
                MUTED,
            );
        }
    }

    fn versions_served(&self, l: &mut Layout) {
        l.heading("Plugins and models serving", 40.0);
        if self.versions.is_empty() {
            l.paragraph("No window was scored this week.", 9.0, Weight::Regular, MUTED);
            return;
        }
        let columns = [
            Column::left("Tenant", 70.0),
            Column::left("Model", 110.0),
            Column::left("Preprocess · score · policy plugins", 155.0),
            Column::right("Windows", 50.0),
            Column::left("Served", WIDTH - 385.0),
        ];
        let rows: Vec<Vec<Cell>> = self
            .versions
            .iter()
            .map(|v| {
                vec![
                    Cell::new(v.tenant.clone()),
                    // name@version on two lines: a long name is not broken inside a word.
                    Cell::new(v.model.replacen('@', "\n@", 1)),
                    Cell::new(v.plugins.join("\n")),
                    Cell::new(v.windows.to_string()),
                    Cell::new(format!("{} to {}", short_time(v.first_ms), short_time(v.last_ms))),
                ]
            })
            .collect();
        l.table(&columns, &rows);
    }
}

/// Writes the report of `week` from the store at `store` to `out`; returns its size in bytes.
pub fn write(store: &SqliteStore, week: IsoWeek, out: &std::path::Path) -> anyhow::Result<usize> {
    use anyhow::Context as _;
    let pdf = WeekReport::gather(store, week, crate::clock::now_ms())?.render()?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Written next to its place and renamed: a reader never sees half a report.
    let partial = out.with_extension("pdf.partial");
    std::fs::write(&partial, &pdf).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, out).with_context(|| format!("renaming to {}", out.display()))?;
    Ok(pdf.len())
}

fn pct(p: f64) -> String {
    format!("{:.1} %", p * 100.0)
}

/// The largest `n` contributions by size, `feature +0.123` per line.
fn contributions(value: &serde_json::Value, n: usize) -> String {
    let mut list: Vec<(String, f64)> = value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| Some((c.get("feature")?.as_str()?.to_string(), c.get("value")?.as_f64()?)))
        .collect();
    if list.is_empty() {
        return "not explained".into();
    }
    list.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    list.iter().take(n).map(|(f, v)| format!("{f} {v:+.3}")).collect::<Vec<_>>().join("\n")
}

fn asset_line(asset: &serde_json::Map<String, serde_json::Value>) -> String {
    let get = |k: &str| asset.get(k).and_then(|v| v.as_str()).filter(|s| !s.is_empty());
    match (get("site"), get("position")) {
        (Some(s), Some(p)) => format!("\n{s}, {p}"),
        (Some(s), None) | (None, Some(s)) => format!("\n{s}"),
        (None, None) => String::new(),
    }
}

fn utc(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn abbrev(s: impl fmt::Display) -> String {
    s.to_string().chars().take(3).collect()
}

/// `Sat 5 Apr 10:30`.
fn short_time(ms: i64) -> String {
    let t = utc(ms);
    format!("{} {} {} {:02}:{:02}", abbrev(t.weekday()), t.day(), abbrev(t.month()), t.hour(), t.minute())
}

/// `Mon 31 Mar`.
fn short_day(ms: i64) -> String {
    let t = utc(ms);
    format!("{} {} {}", abbrev(t.weekday()), t.day(), abbrev(t.month()))
}

/// `Monday 31 March 2025`.
fn long_date(ms: i64) -> String {
    let t = utc(ms);
    format!("{} {} {} {}", t.weekday(), t.day(), t.month(), t.year())
}

/// `2019-03-08` (the asset registry's install date) as midnight UTC.
fn install_ms(s: &str) -> Option<i64> {
    let mut parts = s.get(..10)?.splitn(3, '-');
    let year: i32 = parts.next()?.parse().ok()?;
    let month: u8 = parts.next()?.parse().ok()?;
    let day: u8 = parts.next()?.parse().ok()?;
    let date = Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp() * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_weeks_parse_print_and_bound_their_days() {
        let w: IsoWeek = "2025-W14".parse().expect("week");
        assert_eq!(w, IsoWeek { year: 2025, week: 14 });
        assert_eq!(w.to_string(), "2025-W14");
        assert_eq!(rfc3339(w.start_ms()), "2025-03-31T00:00:00Z");
        assert_eq!(rfc3339(w.end_ms()), "2025-04-07T00:00:00Z");
        assert_eq!(IsoWeek::containing(w.start_ms()), w);
        assert_eq!(IsoWeek::containing(w.end_ms() - 1), w);
        assert_eq!(IsoWeek::containing(w.end_ms()).week, 15);
        // 2024-12-30 is in 2025's first week; 2020 had 53 weeks, 2025 has 52.
        assert_eq!(IsoWeek::containing(1_735_516_800_000), IsoWeek { year: 2025, week: 1 });
        assert!("2020-W53".parse::<IsoWeek>().is_ok());
        let e = "2025-W53".parse::<IsoWeek>().unwrap_err();
        assert!(e.contains("no week 53"), "{e}");
        for bad in ["2025-14", "W14", "2025-Wx", ""] {
            assert!(bad.parse::<IsoWeek>().unwrap_err().contains("not an ISO week"), "{bad}");
        }
    }

    #[test]
    fn a_week_of_more_alerts_than_listed_lists_the_oldest_and_counts_them_all() {
        use crate::store::{Durability, OutcomeRow};
        use crate::types::{Alert, Severity};
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("edgepm.db"), Durability::Normal).expect("store");
        let week: IsoWeek = "2025-W14".parse().expect("week");
        let versions = ["p".to_string(), "s".to_string(), "q".to_string()];
        let alert =
            [Alert { severity: Severity::Warning, subject: "hot".into(), body: "line 1\nline 2".into() }];
        let n = ALERTS_LISTED + 10;
        for i in 0..n as i64 {
            let end_ms = week.start_ms() + 60_000 * (i + 1);
            let row = OutcomeRow {
                tenant: "acme",
                device: "MTR-1",
                start_ms: end_ms - 1000,
                end_ms,
                probability: 0.9,
                is_failure: true,
                model: "m@1",
                versions: &versions,
                contributions_json: r#"[{"feature":"vibration_rms","value":1.5}]"#,
                alerts: &alert,
            };
            store.insert_outcome(&row, end_ms).expect("stored");
            store.record_window("acme", "MTR-1", end_ms, end_ms).expect("device");
        }
        let r = WeekReport::gather(&store, week, week.end_ms()).expect("gathered");
        assert_eq!((r.alert_total, r.alerts.len()), (n, ALERTS_LISTED));
        assert_eq!(r.alerts[0].ts_ms, week.start_ms() + 60_000, "the oldest first");
        assert!(r.alerts.windows(2).all(|w| w[0].ts_ms < w[1].ts_ms));
        assert_eq!(r.devices.len(), 1);
        assert_eq!(r.versions[0].windows, n as u64);
        let pdf = r.render().expect("rendered");
        assert!(pdf.starts_with(b"%PDF-"));
    }

    #[test]
    fn times_and_explanations_read_as_in_the_report() {
        assert_eq!(short_time(1_743_849_000_000), "Sat 5 Apr 10:30");
        assert_eq!(short_day(1_743_379_200_000), "Mon 31 Mar");
        assert_eq!(long_date(1_743_379_200_000), "Monday 31 March 2025");
        assert_eq!(install_ms("2025-03-31"), Some(1_743_379_200_000));
        assert_eq!(install_ms("31/03/2025"), None);
        let c = serde_json::json!([
            {"feature": "kurtosis", "value": 0.2},
            {"feature": "vibration_rms", "value": -1.5},
            {"feature": "temperature_mean", "value": 0.01}
        ]);
        assert_eq!(contributions(&c, 2), "vibration_rms -1.500\nkurtosis +0.200");
        assert_eq!(contributions(&serde_json::json!([]), 2), "not explained");
    }
}
