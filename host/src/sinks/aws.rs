//! What the AWS sinks (Timestream, SNS, SES) share: the SDK configuration, the classification of
//! SDK errors into outcomes, and the gateway's clock skew.
//!
//! - Credentials and region come from the SDK's default chain (environment, profile, web
//!   identity, ECS task role, IMDS) — never from `edgepm.toml`, never logged. `region` in a sink's
//!   table only overrides the chain's region.
//! - HTTPS on rustls with ring (like the MQTT client), so no aws-lc build.
//! - No SDK retries: the outbox owns retries and their back-off (a sink that retries inside the
//!   SDK would hold a batch for minutes, invisible to the queue metrics).
//! - The client is made inside the sink's loop at its first delivery, so a gateway that starts
//!   offline starts; a failure to make it is a retry like any other.

use super::{Delivery, Outcome};
use crate::metrics::TelemetryMetrics;
use crate::store::OutboxItem;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sns::config::SharedCredentialsProvider;
use aws_sdk_sns::config::interceptors::BeforeDeserializationInterceptorContextRef;
use aws_sdk_sns::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_sns::error::{ProvideErrorMetadata, SdkError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tracing::warn;

/// Back-off after an error that a person has to fix (credentials, permissions, a missing table
/// or topic): the messages are kept and tried again, not dropped.
pub const CONFIG_ERROR_RETRY: Duration = Duration::from_secs(60);
/// Skew of the gateway's clock against AWS's past which it is logged (a warning at most every
/// ten minutes). Timestream rejects records more than 15 minutes in the future.
const SKEW_WARN: Duration = Duration::from_secs(60);

/// Where an AWS sink talks to, and as whom.
#[derive(Debug, Clone, Default)]
pub struct AwsTarget {
    /// Overrides the region of the default chain (`AWS_REGION`, the profile, IMDS).
    pub region: Option<String>,
    /// An endpoint URL instead of AWS's (a local emulator, a VPC endpoint). For Timestream it
    /// also turns endpoint discovery off.
    pub endpoint: Option<String>,
    /// Credentials instead of the default chain's: for programs that embed the host (and
    /// tests); `edgepm run` always uses the chain.
    pub credentials: Option<SharedCredentialsProvider>,
}

/// The HTTPS client of the AWS sinks: rustls with ring.
pub fn http_client() -> aws_sdk_sns::config::SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https()
}

/// The SDK configuration every AWS sink starts from.
pub async fn sdk_config(target: &AwsTarget) -> aws_config::SdkConfig {
    let http = http_client();
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(30))
        .operation_timeout(Duration::from_secs(30))
        .build();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts);
    if let Some(region) = &target.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(endpoint) = &target.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(credentials) = &target.credentials {
        loader = loader.credentials_provider(credentials.clone());
    }
    loader.load().await
}

/// A delivery that sends a batch's messages one after another, in order: `send` gives each its
/// outcome (SNS and SES take one message per call).
pub fn one_by_one<S, F, Fut>(shared: Arc<S>, batch: &[OutboxItem], send: F) -> Delivery
where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>, OutboxItem) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Outcome> + Send,
{
    let batch = batch.to_vec();
    Box::pin(async move {
        let mut out = Vec::with_capacity(batch.len());
        for item in batch {
            out.push(send(shared.clone(), item).await);
        }
        out
    })
}

/// What a failed AWS call means for the messages it carried.
pub fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(e: &SdkError<E>) -> Outcome {
    let text = aws_sdk_sns::error::DisplayErrorContext(e).to_string();
    let SdkError::ServiceError(service) = e else {
        return match e {
            // The request could not even be built: the message itself is at fault.
            SdkError::ConstructionFailure(_) => Outcome::Permanent(text),
            // Timeouts, connection errors, unreadable responses.
            _ => Outcome::retry(text),
        };
    };
    let status = service.raw().status().as_u16();
    let code = service.err().code().unwrap_or("");
    classify_code(status, code, text)
}

/// [`classify`] from the HTTP status and AWS's error code.
pub fn classify_code(status: u16, code: &str, text: String) -> Outcome {
    const THROTTLED: &[&str] = &[
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "LimitExceededException",
        "ServiceUnavailable",
        "InternalServerException",
        "InternalFailure",
        "InternalError",
        "KMSThrottlingException",
    ];
    const FIX_ME: &[&str] = &[
        "AccessDeniedException",
        "AccessDenied",
        "AuthorizationError",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "ResourceNotFoundException",
        "NotFound",
        "NotFoundException",
        "InvalidEndpointException",
        "AccountSuspendedException",
        "SendingPausedException",
        "MailFromDomainNotVerifiedException",
    ];
    if status >= 500 || status == 429 || THROTTLED.contains(&code) {
        Outcome::retry(text)
    } else if status == 401 || status == 403 || FIX_ME.contains(&code) {
        Outcome::Retry {
            reason: format!("{text} (configuration or credentials; kept and retried)"),
            after: Some(CONFIG_ERROR_RETRY),
        }
    } else {
        Outcome::Permanent(text)
    }
}

/// Reads the `Date` header of every AWS response and sets `edgepm_sink_clock_skew_seconds`
/// (the gateway's clock minus AWS's; whole seconds, as the header is). Clones share one state.
#[derive(Debug, Clone)]
pub struct ClockSkew {
    sink: &'static str,
    metrics: TelemetryMetrics,
    warned: Arc<Mutex<Option<Instant>>>,
}

impl ClockSkew {
    pub fn new(sink: &'static str, metrics: TelemetryMetrics) -> ClockSkew {
        ClockSkew { sink, metrics, warned: Arc::new(Mutex::new(None)) }
    }

    /// Records the skew against a server's `Date`.
    pub fn observe(&self, date: &str) {
        let Ok(server) = httpdate::parse_http_date(date) else { return };
        let skew = match SystemTime::now().duration_since(server) {
            Ok(ahead) => ahead.as_secs_f64(),
            Err(behind) => -behind.duration().as_secs_f64(),
        };
        // The header has whole seconds and the response took a while: under 2 s is no skew.
        let skew = if skew.abs() < 2.0 { 0.0 } else { skew.trunc() };
        self.metrics.clock_skew(self.sink).set(skew);
        if skew.abs() >= SKEW_WARN.as_secs_f64() {
            let mut warned = self.warned.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(600)) {
                *warned = Some(Instant::now());
                warn!(
                    sink = self.sink,
                    skew_seconds = skew,
                    "The gateway's clock is off from AWS's: check NTP (Timestream rejects records more than 15 min in the future, and signatures fail past 5 min)"
                );
            }
        }
    }
}

impl Intercept for ClockSkew {
    fn name(&self) -> &'static str {
        "edgepm-clock-skew"
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if let Some(date) = context.response().headers().get("date") {
            self.observe(date);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_server_errors_retry_configuration_errors_wait_the_rest_is_permanent() {
        let t = || "x".to_string();
        assert_eq!(classify_code(400, "ThrottlingException", t()), Outcome::retry("x"));
        assert_eq!(classify_code(503, "", t()), Outcome::retry("x"));
        assert_eq!(classify_code(500, "InternalServerException", t()), Outcome::retry("x"));
        assert!(matches!(
            classify_code(403, "AccessDeniedException", t()),
            Outcome::Retry { after: Some(CONFIG_ERROR_RETRY), .. }
        ));
        assert!(matches!(
            classify_code(400, "ResourceNotFoundException", t()),
            Outcome::Retry { after: Some(CONFIG_ERROR_RETRY), .. }
        ));
        assert!(matches!(classify_code(400, "ValidationException", t()), Outcome::Permanent(_)));
        assert!(matches!(classify_code(400, "InvalidParameter", t()), Outcome::Permanent(_)));
    }

    #[test]
    fn the_clock_skew_is_the_gateway_minus_the_server() {
        let metrics = crate::metrics::Metrics::new().telemetry.clone();
        let skew = ClockSkew::new("test", metrics.clone());
        let ten_minutes_ago = SystemTime::now() - Duration::from_secs(600);
        skew.observe(&httpdate::fmt_http_date(ten_minutes_ago));
        let seen = metrics.clock_skew("test").get();
        assert!((599.0..=601.0).contains(&seen), "{seen}");
        skew.observe(&httpdate::fmt_http_date(SystemTime::now()));
        assert_eq!(metrics.clock_skew("test").get(), 0.0);
        skew.observe("not a date");
        assert_eq!(metrics.clock_skew("test").get(), 0.0, "ignored");
    }
}
