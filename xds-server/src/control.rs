//! The control loop's one operation: load the files, translate, build a consistent snapshot,
//! publish it — or keep the last good one and report every problem.
//!
//! file change -> [`ControlPlane::reload`] -> `config::load` (all problems at once) ->
//! `translate` -> `Snapshot::build` (consistency) -> watch channel -> every ADS stream.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::watch;

use crate::ads::SnapshotRx;
use crate::metrics::Metrics;
use crate::nodes::Nodes;
use crate::snapshot::{Resource, Snapshot, TypeKind};
use crate::translate::Resources;
use crate::{config, translate};
use vrata_proto::vrata::config::v1::{CacheConfig, Purge};

/// What serving needs to know about the config in force.
#[derive(Debug, Clone, Serialize)]
pub struct Current {
    pub version: String,
    pub generation: u64,
    #[serde(with = "crate::unix_seconds")]
    pub loaded_at: SystemTime,
    pub files: Vec<PathBuf>,
    pub resources: std::collections::BTreeMap<&'static str, usize>,
    /// The state-of-the-world version of each type (CDS, EDS, SDS, LDS, RDS, RLC, AZP, AGG, RCC): what a node in sync
    /// has ACKed.
    pub type_versions: std::collections::BTreeMap<&'static str, String>,
    /// The merged gateway config (GET /admin/config).
    #[serde(skip)]
    pub document: crate::config::Document,
}

/// The last rejected load: shown until a good one replaces it.
#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    #[serde(with = "crate::unix_seconds")]
    pub at: SystemTime,
    /// Every problem, `FILE:LINE:COL: message`.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new snapshot was published.
    Applied { version: String },
    /// The files changed but the Envoy resources did not: nothing pushed.
    Unchanged,
    /// The config is invalid; the last good snapshot keeps serving.
    Rejected { problems: Vec<String> },
}

#[derive(Debug, Default)]
struct State {
    generation: u64,
    current: Option<Current>,
    last_error: Option<LastError>,
    /// Recent cache purges, oldest first (see [`ControlPlane::purge`]).
    purges: Vec<Purge>,
}

/// How long a purge stays in response-cache's config: an entry written before it, by an
/// instance that had not seen it yet, is refused for this long. response-cache keeps no entry
/// longer (its stores cap an entry's life at a day).
pub const PURGE_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// At most this many purges are kept (the oldest go first); each costs a few bytes per
/// response-cache instance and a comparison per served entry.
pub const MAX_PURGES: usize = 1000;

/// Why a purge was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PurgeError {
    #[error("no configuration is loaded yet")]
    NoConfig,
    #[error("route `{0}` has no `cache`; routes with a cache: {1}")]
    UnknownRoute(String, String),
    #[error("`path_prefix` must start with `/` (got `{0}`)")]
    BadPrefix(String),
    #[error("internal error, purge refused: {0}")]
    Internal(String),
}

/// A published purge and the response-cache config version that carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub purge: Purge,
    pub version: String,
}

pub struct ControlPlane {
    path: PathBuf,
    boot_id: String,
    tx: Mutex<Option<watch::Sender<Option<Arc<Snapshot>>>>>,
    rx: SnapshotRx,
    state: Mutex<State>,
    /// Held while a snapshot is built and published (reloads and purges), so that neither
    /// publishes over the other's newer state.
    publish: Mutex<()>,
    pub nodes: Arc<Nodes>,
    /// Stats the Envoys stream to the metrics sink.
    pub fleet: Arc<crate::fleet::Fleet>,
    pub metrics: Metrics,
}

impl ControlPlane {
    pub fn new(path: PathBuf, metrics: Metrics) -> Self {
        let (tx, rx) = watch::channel(None);
        Self {
            path,
            boot_id: crate::snapshot::boot_id(),
            tx: Mutex::new(Some(tx)),
            rx,
            state: Mutex::new(State::default()),
            publish: Mutex::new(()),
            nodes: Arc::new(Nodes::default()),
            fleet: Arc::new(crate::fleet::Fleet::default()),
            metrics,
        }
    }

    pub fn config_path(&self) -> &Path {
        &self.path
    }

    pub fn snapshots(&self) -> SnapshotRx {
        self.rx.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // State is replaced field by field under the lock; a panic elsewhere cannot leave it
        // inconsistent, so recover from poisoning.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn current(&self) -> Option<Current> {
        self.lock().current.clone()
    }

    pub fn last_error(&self) -> Option<LastError> {
        self.lock().last_error.clone()
    }

    /// Files the last successful load read (the watcher adds their folders).
    pub fn files(&self) -> Vec<PathBuf> {
        self.lock()
            .current
            .as_ref()
            .map(|c| c.files.clone())
            .unwrap_or_default()
    }

    /// Loads, validates and publishes. Blocking (file I/O): call it off the async runtime.
    pub fn reload(&self) -> Outcome {
        let started = Instant::now();
        let outcome = self.try_reload();
        match &outcome {
            Outcome::Applied { version } => {
                self.metrics.reload(true);
                tracing::info!(%version, elapsed_ms = started.elapsed().as_millis() as u64, "config applied");
            }
            Outcome::Unchanged => {
                self.metrics.reload(true);
                tracing::info!("config reloaded: no change to the Envoy resources");
            }
            Outcome::Rejected { problems } => {
                self.metrics.reload(false);
                for p in problems {
                    tracing::error!(problem = %p, "config rejected; the last good version keeps serving");
                }
                self.lock().last_error = Some(LastError {
                    at: SystemTime::now(),
                    problems: problems.clone(),
                });
            }
        }
        outcome
    }

    fn try_reload(&self) -> Outcome {
        let _publishing = self.publish.lock().unwrap_or_else(|p| p.into_inner());
        let t0 = Instant::now();
        let loaded = match config::load(&self.path) {
            Ok(l) => l,
            Err(diags) => {
                return Outcome::Rejected {
                    problems: diags.iter().map(ToString::to_string).collect(),
                };
            }
        };
        for w in &loaded.warnings {
            tracing::warn!(warning = %w.warning(), "config warning");
        }
        let t1 = Instant::now();
        let mut resources = translate::translate(&loaded.gateway);
        resources.cache_config.purges = self.lock().purges.clone();
        let t2 = Instant::now();
        let prev = self.rx.borrow().clone();
        let generation = self.lock().generation + 1;
        let snapshot = match Snapshot::build(
            &self.boot_id,
            generation,
            prev.as_deref(),
            resources_of(resources),
        ) {
            Ok(s) => s,
            Err(e) => {
                // The model is validated, so this is a vrata bug; refuse rather than serve 503s.
                return Outcome::Rejected {
                    problems: vec![format!(
                        "{}: internal error, refusing the config: {e}",
                        self.path.display()
                    )],
                };
            }
        };
        tracing::debug!(
            load_ms = (t1 - t0).as_secs_f64() * 1e3,
            translate_ms = (t2 - t1).as_secs_f64() * 1e3,
            snapshot_ms = t2.elapsed().as_secs_f64() * 1e3,
            "reload stages"
        );
        let unchanged = prev.as_deref().is_some_and(|p| {
            crate::snapshot::TypeKind::PUSH_ORDER
                .into_iter()
                .all(|k| p.types(k).version == snapshot.types(k).version)
        });
        let mut state = self.lock();
        state.last_error = None;
        if unchanged {
            if let Some(cur) = state.current.as_mut() {
                cur.document = loaded.document;
                cur.files = loaded.files;
            }
            return Outcome::Unchanged;
        }
        let version = snapshot.version.clone();
        state.generation = generation;
        // The replaced state (the old files' trees) is dropped after the push, not before.
        let replaced = state.current.replace(Current {
            version: version.clone(),
            generation,
            loaded_at: SystemTime::now(),
            files: loaded.files,
            resources: snapshot.counts(),
            type_versions: crate::snapshot::TypeKind::PUSH_ORDER
                .into_iter()
                .map(|k| (k.short(), snapshot.types(k).version.clone()))
                .collect(),
            document: loaded.document,
        });
        drop(state);
        self.metrics.config_generation.set(generation as i64);
        self.metrics.config_last_success_seconds.set(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or_default(),
        );
        let superseded = self
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|tx| tx.send_replace(Some(Arc::new(snapshot))));
        self.fleet
            .set_names(crate::fleet::Names::of(&loaded.gateway));
        drop((replaced, superseded, prev));
        Outcome::Applied { version }
    }

    /// Records a purge of the response cache — entries of `route` (every route when `None`)
    /// whose request path starts with `path_prefix` (every path when `None`) — and publishes
    /// it in response-cache's config, which every response-cache instance applies (and one of
    /// them deletes the matching entries from Redis). Returns the config version to wait for.
    pub fn purge(
        &self,
        route: Option<String>,
        path_prefix: Option<String>,
    ) -> Result<Published, PurgeError> {
        let _publishing = self.publish.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(prefix) = &path_prefix
            && !prefix.starts_with('/')
        {
            return Err(PurgeError::BadPrefix(prefix.clone()));
        }
        let prev = self.rx.borrow().clone().ok_or(PurgeError::NoConfig)?;
        let current_config = prev
            .types(TypeKind::Cache)
            .entries
            .values()
            .find_map(|e| match &*e.resource {
                Resource::Cache(c) => Some(c.clone()),
                _ => None,
            })
            .ok_or(PurgeError::NoConfig)?;
        if let Some(route) = &route
            && !current_config.routes.iter().any(|r| &r.route == route)
        {
            let known: Vec<String> = current_config
                .routes
                .iter()
                .map(|r| format!("`{}`", r.route))
                .collect();
            return Err(PurgeError::UnknownRoute(
                route.clone(),
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                },
            ));
        }
        let now_ms = u64::try_from(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
        )
        .unwrap_or(u64::MAX);
        let mut state = self.lock();
        let last = state.purges.last().map_or(0, |p| p.id);
        let purge = Purge {
            id: now_ms.max(last + 1),
            route: route.unwrap_or_default(),
            path_prefix: path_prefix.unwrap_or_default(),
        };
        state.purges.push(purge.clone());
        let oldest_kept = now_ms.saturating_sub(PURGE_RETENTION.as_millis() as u64);
        state.purges.retain(|p| p.id >= oldest_kept);
        let excess = state.purges.len().saturating_sub(MAX_PURGES);
        state.purges.drain(..excess);
        let purges = state.purges.clone();
        let generation = state.generation + 1;
        drop(state);

        let cache = CacheConfig {
            purges,
            ..current_config
        };
        let resources = TypeKind::PUSH_ORDER.into_iter().flat_map(|kind| {
            prev.types(kind)
                .entries
                .values()
                .map(|e| match &*e.resource {
                    Resource::Cache(_) => Resource::Cache(cache.clone()),
                    other => other.clone(),
                })
                .collect::<Vec<_>>()
        });
        let snapshot = Snapshot::build(&self.boot_id, generation, Some(&prev), resources)
            .map_err(|e| PurgeError::Internal(e.to_string()))?;
        let version = snapshot.types(TypeKind::Cache).version.clone();
        let mut state = self.lock();
        state.generation = generation;
        if let Some(cur) = state.current.as_mut() {
            cur.version = snapshot.version.clone();
            cur.generation = generation;
            cur.type_versions = TypeKind::PUSH_ORDER
                .into_iter()
                .map(|k| (k.short(), snapshot.types(k).version.clone()))
                .collect();
        }
        drop(state);
        if let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            tx.send_replace(Some(Arc::new(snapshot)));
        }
        tracing::info!(id = purge.id, route = %purge.route, path_prefix = %purge.path_prefix, %version, "cache purge published");
        Ok(Published { purge, version })
    }

    /// Ends every ADS stream (they see the snapshot feed close) so the server can drain.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// The typed resources in push order.
pub fn resources_of(r: Resources) -> impl Iterator<Item = Resource> {
    r.clusters
        .into_iter()
        .map(Resource::Cluster)
        .chain(r.endpoints.into_iter().map(Resource::Endpoint))
        .chain(r.secrets.into_iter().map(Resource::Secret))
        .chain(r.listeners.into_iter().map(Resource::Listener))
        .chain(r.route_configs.into_iter().map(Resource::Route))
        .chain(std::iter::once(Resource::RateLimit(r.rate_limit_config)))
        .chain(std::iter::once(Resource::Authz(r.authz_policy)))
        .chain(std::iter::once(Resource::Aggregator(r.aggregator_config)))
        .chain(std::iter::once(Resource::Cache(r.cache_config)))
}
