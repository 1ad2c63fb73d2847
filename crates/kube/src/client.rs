//! Kubernetes client construction: `ClientConfig` (kubeconfig / endpoint+TLS / in-cluster) to a
//! kube `Client`, wrapped in a tower layer that applies `apiserver_qps`/`burst`/`max_inflight`
//! and records the REST client metrics. Reads config files; opens no connections itself.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use kube::client::{Body, ClientBuilder, DynBody};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::sync::Semaphore;
use tower::buffer::Buffer;
use tower::{BoxError, Layer, Service, ServiceExt};

use crate::metrics::{count_request, observe, RATE_LIMITER_DURATION, REQUEST_DURATION};
use crate::Error;

/// User-Agent sent to the API server.
pub const USER_AGENT: &str = concat!(
    "CoreDNS/1.14.7-sextant-",
    env!("CARGO_PKG_VERSION"),
    " (linux) sextant"
);

/// Where to find the API server and how to authenticate.
/// Precedence when several are configured (decided by the caller, as CoreDNS does):
/// kubeconfig > endpoint > in-cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientConfig {
    /// `kubeconfig FILE [CONTEXT]`.
    Kubeconfig {
        /// Path of the kubeconfig file.
        path: PathBuf,
        /// Context to use (default: the file's current-context).
        context: Option<String>,
    },
    /// `endpoint URL` with optional `tls CERT KEY CACERT`.
    Endpoint {
        /// API server URL.
        url: String,
        /// (client certificate, client key, CA certificate) PEM files.
        tls: Option<(PathBuf, PathBuf, PathBuf)>,
    },
    /// Service account token and CA from `/var/run/secrets/kubernetes.io/serviceaccount/`,
    /// address from `KUBERNETES_SERVICE_HOST` / `KUBERNETES_SERVICE_PORT`.
    InCluster,
}

/// Client-side rate limits; 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RateLimits {
    /// Sustained requests per second (`apiserver_qps`).
    pub qps: f32,
    /// Burst size (`apiserver_burst`); 0 with qps > 0 means max(1, qps).
    pub burst: u32,
    /// Concurrent requests in flight (`apiserver_max_inflight`); a watch holds a slot only until
    /// its response headers arrive.
    pub max_inflight: u32,
}

async fn kube_config(c: &ClientConfig) -> Result<Config, Error> {
    let cfg_err = |e: String| Error::Config(e);
    let mut cfg = match c {
        ClientConfig::Kubeconfig { path, context } => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| cfg_err(format!("kubeconfig {}: {e}", path.display())))?;
            let opts = KubeConfigOptions {
                context: context.clone(),
                ..Default::default()
            };
            Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(|e| cfg_err(format!("kubeconfig {}: {e}", path.display())))?
        }
        ClientConfig::Endpoint { url, tls: None } => {
            let uri = url
                .parse()
                .map_err(|e| cfg_err(format!("endpoint {url:?}: {e}")))?;
            Config::new(uri)
        }
        ClientConfig::Endpoint {
            url,
            tls: Some((cert, key, ca)),
        } => {
            let kc = serde_json::json!({
                "apiVersion": "v1", "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": url,
                    "certificate-authority": ca.display().to_string()}}],
                "users": [{"name": "u", "user": {
                    "client-certificate": cert.display().to_string(),
                    "client-key": key.display().to_string()}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            });
            let kc: Kubeconfig = serde_json::from_value(kc)
                .map_err(|e| cfg_err(format!("endpoint {url:?} tls: {e}")))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| cfg_err(format!("endpoint {url:?} tls: {e}")))?
        }
        ClientConfig::InCluster => {
            Config::incluster().map_err(|e| cfg_err(format!("in-cluster config: {e}")))?
        }
    };
    cfg.connect_timeout = Some(Duration::from_secs(5));
    if let Ok(v) = http::HeaderValue::from_str(USER_AGENT) {
        cfg.headers.push((http::header::USER_AGENT, v));
    }
    Ok(cfg)
}

/// Builds a kube `Client` with the rate limits and metrics layer.
pub async fn build_client(c: &ClientConfig, limits: &RateLimits) -> Result<Client, Error> {
    let cfg = kube_config(c).await?;
    let host: Arc<str> = cfg
        .cluster_url
        .authority()
        .map_or_else(|| "unknown".into(), |a| a.as_str().into());
    let builder = ClientBuilder::try_from(cfg).map_err(|e| Error::Config(e.to_string()))?;
    let layer = LimitLayer::new(limits, host);
    Ok(builder.with_layer(&layer).build())
}

/// Token bucket (reservation style: tokens may go negative, callers wait their turn).
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    burst: f64,
    qps: f64,
    last: Instant,
}

impl Bucket {
    fn reserve(&mut self) -> Duration {
        let now = Instant::now();
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.qps).min(self.burst);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.qps)
        }
    }
}

#[derive(Clone)]
struct Limits {
    bucket: Option<Arc<Mutex<Bucket>>>,
    sem: Option<Arc<Semaphore>>,
    host: Arc<str>,
}

/// The tower layer applying [`RateLimits`] and recording metrics.
#[derive(Clone)]
pub(crate) struct LimitLayer {
    limits: Limits,
}

impl LimitLayer {
    pub(crate) fn new(l: &RateLimits, host: Arc<str>) -> Self {
        let bucket = (l.qps > 0.0).then(|| {
            let qps = f64::from(l.qps);
            let burst = if l.burst > 0 {
                f64::from(l.burst)
            } else {
                qps.max(1.0)
            };
            Arc::new(Mutex::new(Bucket {
                tokens: burst,
                burst,
                qps,
                last: Instant::now(),
            }))
        });
        let sem = (l.max_inflight > 0).then(|| Arc::new(Semaphore::new(l.max_inflight as usize)));
        LimitLayer {
            limits: Limits { bucket, sem, host },
        }
    }
}

type RespFuture = Pin<Box<dyn Future<Output = Result<Response<Box<DynBody>>, BoxError>> + Send>>;

impl<S> Layer<S> for LimitLayer
where
    S: Service<Request<Body>, Response = Response<Box<DynBody>>, Error = BoxError> + Send + 'static,
    S::Future: Send + 'static,
{
    type Service = LimitService<S>;
    fn layer(&self, inner: S) -> LimitService<S> {
        LimitService {
            inner: Buffer::new(inner, 1024),
            limits: self.limits.clone(),
        }
    }
}

/// Service produced by [`LimitLayer`].
pub(crate) struct LimitService<S: Service<Request<Body>>> {
    inner: Buffer<Request<Body>, S::Future>,
    limits: Limits,
}

impl<S> Service<Request<Body>> for LimitService<S>
where
    S: Service<Request<Body>, Response = Response<Box<DynBody>>, Error = BoxError> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Box<DynBody>>;
    type Error = BoxError;
    type Future = RespFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> RespFuture {
        let svc = self.inner.clone();
        let limits = self.limits.clone();
        Box::pin(async move {
            let verb = req.method().as_str().to_string();
            let host = limits.host.clone();
            let t0 = Instant::now();
            let wait = limits.bucket.as_ref().map_or(Duration::ZERO, |b| {
                b.lock().unwrap_or_else(|p| p.into_inner()).reserve()
            });
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let _permit = match &limits.sem {
                Some(s) => Some(s.clone().acquire_owned().await?),
                None => None,
            };
            observe(
                &RATE_LIMITER_DURATION,
                &[verb.as_str(), &host],
                t0.elapsed().as_secs_f64(),
            );
            let t1 = Instant::now();
            let res = svc.oneshot(req).await;
            observe(
                &REQUEST_DURATION,
                &[verb.as_str(), &host],
                t1.elapsed().as_secs_f64(),
            );
            let code = match &res {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "<error>".to_string(),
            };
            count_request(&code, &verb, &host);
            res
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_reserves_in_turn() {
        let mut b = Bucket {
            tokens: 2.0,
            burst: 2.0,
            qps: 10.0,
            last: Instant::now(),
        };
        assert_eq!(b.reserve(), Duration::ZERO);
        assert_eq!(b.reserve(), Duration::ZERO);
        let w = b.reserve();
        assert!(
            w > Duration::from_millis(80) && w <= Duration::from_millis(100),
            "{w:?}"
        );
        let w2 = b.reserve();
        assert!(w2 > w);
    }
}
