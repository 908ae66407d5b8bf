//! The equipment-health dashboard at `/`: one page (a maud template) and its assets, all built
//! into the binary — no CDN, no map tiles: the gateway may be offline. The page is a client of
//! `/api/v1` and nothing more (`dashboard.js`): it reads the API, draws with uPlot (vendored,
//! MIT), and follows `/api/v1/events` for live updates. With a token configured, the page asks
//! for it and sends it with every API request; the page and its assets hold no data and are
//! served to anyone who can connect.

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use maud::{DOCTYPE, html};

const JS: &str = include_str!("dashboard.js");
const CSS: &str = include_str!("dashboard.css");
const UPLOT_JS: &str = include_str!("vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("vendor/uPlot.min.css");
const UPLOT_LICENSE: &str = include_str!("vendor/uPlot.LICENSE");

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let asset = |content_type: &'static str, body: &'static str| {
        get(move || async move {
            ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "max-age=3600")], body)
        })
    };
    Router::new()
        .route("/", get(page))
        .route("/assets/dashboard.js", asset("text/javascript; charset=utf-8", JS))
        .route("/assets/dashboard.css", asset("text/css; charset=utf-8", CSS))
        .route("/assets/uPlot.iife.min.js", asset("text/javascript; charset=utf-8", UPLOT_JS))
        .route("/assets/uPlot.min.css", asset("text/css; charset=utf-8", UPLOT_CSS))
        .route("/assets/uPlot.LICENSE", asset("text/plain; charset=utf-8", UPLOT_LICENSE))
}

async fn page() -> impl IntoResponse {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "edgepm — equipment health" }
                link rel="stylesheet" href="/assets/uPlot.min.css";
                link rel="stylesheet" href="/assets/dashboard.css";
            }
            body {
                header {
                    h1 { "Equipment health" }
                    span #status { "loading…" }
                }
                form #token-form hidden {
                    "This host requires its API token: "
                    input #token-input type="password" autocomplete="off";
                    button type="submit" { "Open" }
                }
                main {
                    section #evolution {
                        h2 { "Failure probability" }
                        div .controls {
                            select #device-select {}
                            select #range-select {
                                option value="86400000" { "24 h" }
                                option value="604800000" selected { "7 days" }
                                option value="2592000000" { "30 days" }
                            }
                        }
                        div #chart {}
                        p .note { "Dots: alerts. A long range is downsampled to each interval's highest probability." }
                    }
                    section #risk {
                        h2 { "Top 5 by risk" }
                        table #top5 { thead { tr { th { "Equipment" } th { "Probability" } th { "Why (contributions)" } } } tbody {} }
                    }
                    section #map {
                        h2 { "Assets" }
                        div #map-sites {}
                    }
                    section #ages {
                        h2 { "New vs old equipment" }
                        table #age-bands { thead { tr { th { "Installed" } th { "Equipment" } th { "Mean probability" } th { "Failing now" } } } tbody {} }
                    }
                    section #alerts {
                        h2 { "Recent alerts" }
                        table #alert-list { thead { tr { th { "When" } th { "Equipment" } th { "Alert" } th { "Acknowledged" } } } tbody {} }
                    }
                    section #degradation {
                        h2 { "Degradation (vibration RMS, last 7 days vs the 7 before)" }
                        table #degradation-list { thead { tr { th { "Equipment" } th { "Baseline" } th { "Recent" } th { "Rise" } } } tbody {} }
                    }
                    section #report {
                        h2 { "Weekly report" }
                        p {
                            select #report-week {}
                            " "
                            button #report-download type="button" { "Download PDF" }
                        }
                        p .note { "The week's views, alerts with their explanations and acknowledgements, degradation and versions, as a PDF (UTC weeks, Monday to Sunday)." }
                    }
                    section #versions {
                        h2 { "Serving" }
                        table #version-list { thead { tr { th { "Tenant" } th { "Model" } th { "Preprocess" } th { "Score" } th { "Policy" } } } tbody {} }
                    }
                }
                footer { "edgepm · charts by uPlot (MIT, " a href="/assets/uPlot.LICENSE" { "licence" } ")" }
                script src="/assets/uPlot.iife.min.js" {}
                script src="/assets/dashboard.js" {}
            }
        }
    };
    Html(markup.into_string())
}
