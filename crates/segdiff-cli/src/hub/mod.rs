//! Models on the Hugging Face Hub: `hf://owner/name[@revision][/folder]` references, resolved
//! through `hf-hub` into the standard Hugging Face cache.
//!
//! hf-hub 1.0 needs three guards, added here:
//! - it ignores `HF_HUB_OFFLINE`; we honour it (and `--offline`) with `local_files_only`, so an
//!   offline lookup answers from the cache in milliseconds or fails at once;
//! - on an unreachable network it retries with back-off; we allow one retry;
//! - against a server that accepts connections but never answers it waits forever (its metadata
//!   request has no timeout), so every network call runs on a worker thread under a stall
//!   watchdog: no progress for `stall_timeout` and the call is abandoned with an error.
//!
//! When the network fails but the reference is already cached, the cached snapshot is used (with
//! a warning), as `huggingface_hub` does.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use hf_hub::progress::{DownloadEvent, Progress, ProgressEvent, ProgressHandler};
use hf_hub::{HFClientSync, HFError};

/// The scheme that marks a Hub reference wherever a local model folder is accepted.
pub const SCHEME: &str = "hf://";

/// Default stall timeout (seconds without any progress) of a network call.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Files fetched for a model folder when no `--file` is named: configs, weights in safetensors,
/// the segdiff conditioning record, model cards and licence notices.
pub const MODEL_PATTERNS: [&str; 4] = ["*.json", "*.safetensors", "*.md", "*.txt"];

/// Why a Hub reference could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("`{0}` is not a Hub reference: expected owner/name[@revision][/folder] (after hf://)")]
    BadReference(String),
    #[error(
        "{reference} is not in the Hugging Face cache at {cache} and the Hub may not be contacted \
         ({why}); fetch it where there is network (`cargo xtask weights {repo}`) and copy the \
         cache, or unset HF_HUB_OFFLINE"
    )]
    NotCached {
        reference: String,
        repo: String,
        cache: PathBuf,
        why: String,
    },
    #[error(
        "{reference}: the Hub at {endpoint} could not be reached and nothing is cached at {cache}"
    )]
    Unreachable {
        reference: String,
        endpoint: String,
        cache: PathBuf,
        /// The transport error inside hf-hub's `HFError::Request`, whose message repeats it.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "{reference}: no answer from the Hub at {endpoint} for {secs} s (stall timeout; raise it \
         with SEGDIFF_HUB_TIMEOUT=SECONDS) and nothing is cached at {cache}"
    )]
    Stalled {
        reference: String,
        endpoint: String,
        secs: u64,
        cache: PathBuf,
    },
    // In the message rather than the `source()`: some `HFError`s (`Request`, `Xet`) already
    // print their own source, so the chain would repeat it.
    #[error("{reference}: {error}")]
    Hub {
        reference: String,
        error: Box<HFError>,
    },
    #[error("{reference}: the cached snapshot {snapshot} has no `{path}`")]
    MissingInSnapshot {
        reference: String,
        snapshot: PathBuf,
        path: String,
    },
}

/// A repository (and optionally a revision and a folder inside it) on the Hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRef {
    pub owner: String,
    pub name: String,
    /// Branch, tag or commit; `None` = the default branch.
    pub revision: Option<String>,
    /// A folder inside the repository (for example `unet` of a pipeline repository).
    pub folder: Option<String>,
}

impl HubRef {
    /// `owner/name`.
    pub fn repo_id(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    /// The reference as written on the command line (`hf://…`).
    pub fn uri(&self) -> String {
        let mut s = format!("{SCHEME}{}", self.repo_id());
        if let Some(r) = &self.revision {
            s.push('@');
            s.push_str(&r.replace('/', "%2F"));
        }
        if let Some(f) = &self.folder {
            s.push('/');
            s.push_str(f);
        }
        s
    }
}

impl HubRef {
    /// The reference a command-line location names, if it is an `hf://` one.
    pub fn from_location(location: &Path) -> Option<Result<Self, HubError>> {
        location
            .to_str()
            .filter(|s| s.starts_with(SCHEME))
            .map(str::parse)
    }
}

impl std::fmt::Display for HubRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.uri())
    }
}

impl FromStr for HubRef {
    type Err = HubError;

    /// Parses `owner/name[@revision][/folder]`, with or without the `hf://` prefix. A revision
    /// holding `/` (such as `refs/pr/1`) is written with `%2F`, as `huggingface_hub` does.
    fn from_str(s: &str) -> Result<Self, HubError> {
        let bad = || HubError::BadReference(s.to_string());
        let rest = s.strip_prefix(SCHEME).unwrap_or(s);
        let mut parts = rest.splitn(3, '/');
        let owner = parts.next().filter(|p| !p.is_empty()).ok_or_else(bad)?;
        let name_rev = parts.next().filter(|p| !p.is_empty()).ok_or_else(bad)?;
        let folder = parts.next().map(|f| f.trim_end_matches('/').to_string());
        let (name, revision) = match name_rev.split_once('@') {
            Some((n, r)) if !r.is_empty() => (n, Some(r.replace("%2F", "/").replace("%2f", "/"))),
            Some(_) => return Err(bad()),
            None => (name_rev, None),
        };
        let valid = |p: &str| {
            !p.is_empty()
                && p != "."
                && p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !valid(owner) || !valid(name) {
            return Err(bad());
        }
        if let Some(f) = &folder {
            if f.is_empty() || f.split('/').any(|p| p.is_empty() || p == "..") {
                return Err(bad());
            }
        }
        Ok(Self {
            owner: owner.to_string(),
            name: name.to_string(),
            revision,
            folder: folder.filter(|f| !f.is_empty()),
        })
    }
}

/// How to reach the Hub.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// Cache folder; `None` = hf-hub's default (`HF_HUB_CACHE`, `$HF_HOME/hub`,
    /// `~/.cache/huggingface/hub`).
    pub cache_dir: Option<PathBuf>,
    /// Hub URL; `None` = `HF_ENDPOINT` or huggingface.co.
    pub endpoint: Option<String>,
    /// Never contact the network; answer from the cache only.
    pub offline: bool,
    /// Abandon a network call after this long without progress.
    pub stall_timeout: Duration,
    /// Show a progress bar for downloads.
    pub progress: bool,
}

impl HubOptions {
    /// Options from the environment: `HF_HUB_OFFLINE` (1/true/yes/on), `SEGDIFF_HUB_TIMEOUT`
    /// (seconds), and hf-hub's own `HF_HUB_CACHE`, `HF_HOME`, `HF_ENDPOINT`, `HF_TOKEN`.
    pub fn from_env() -> Self {
        let offline = std::env::var("HF_HUB_OFFLINE")
            .map(|v| truthy(&v))
            .unwrap_or(false);
        let stall_timeout = std::env::var("SEGDIFF_HUB_TIMEOUT")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(DEFAULT_STALL_TIMEOUT);
        Self {
            cache_dir: None,
            endpoint: None,
            offline,
            stall_timeout,
            progress: true,
        }
    }
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// A connection to the Hub (or only to its cache).
pub struct Hub {
    client: HFClientSync,
    options: HubOptions,
    endpoint: String,
    cache: PathBuf,
}

impl Hub {
    /// A client with the given options.
    pub fn new(options: HubOptions) -> Result<Self, HubError> {
        let mut builder = hf_hub::HFClient::builder().retry_max_attempts(1);
        if let Some(dir) = &options.cache_dir {
            builder = builder.cache_dir(dir);
        }
        if let Some(e) = &options.endpoint {
            builder = builder.endpoint(e);
        }
        let endpoint = options
            .endpoint
            .clone()
            .or_else(|| std::env::var("HF_ENDPOINT").ok())
            .unwrap_or_else(|| "https://huggingface.co".to_string());
        let client = builder.build_sync().map_err(|error| HubError::Hub {
            reference: endpoint.clone(),
            error: Box::new(error),
        })?;
        let cache = options
            .cache_dir
            .clone()
            .unwrap_or_else(hf_hub::resolve_cache_dir);
        Ok(Self {
            client,
            options,
            endpoint,
            cache,
        })
    }

    /// The cache folder in use.
    pub fn cache_dir(&self) -> PathBuf {
        self.cache.clone()
    }

    /// Fetches a model folder (configs, safetensors weights, cards) and returns its local path:
    /// the snapshot folder, or the referenced folder inside it. What the folder must hold is the
    /// loader's business (a denoiser, a segmenter, …).
    pub fn model_dir(&self, r: &HubRef) -> Result<PathBuf, HubError> {
        let patterns: Vec<String> = MODEL_PATTERNS
            .iter()
            .map(|p| match &r.folder {
                Some(f) => format!("{f}/{p}"),
                None => p.to_string(),
            })
            .collect();
        let repo = self.client.model(&r.owner, &r.name);
        let revision = r.revision.clone();
        let snapshot = self.call(
            r,
            Arc::new(move |local_only, progress| {
                repo.snapshot_download()
                    .maybe_revision(revision.clone())
                    .allow_patterns(patterns.clone())
                    .local_files_only(local_only)
                    .maybe_progress(progress)
                    .send()
            }),
        )?;
        let dir = match &r.folder {
            Some(f) => snapshot.join(f),
            None => snapshot.clone(),
        };
        if !dir.is_dir() {
            return Err(HubError::MissingInSnapshot {
                reference: r.uri(),
                snapshot,
                path: r.folder.clone().unwrap_or_default(),
            });
        }
        Ok(dir)
    }

    /// Fetches one file (a path inside the repository, below `folder` when the reference has
    /// one) and returns its local path.
    pub fn file(&self, r: &HubRef, filename: &str) -> Result<PathBuf, HubError> {
        let filename = match &r.folder {
            Some(f) => format!("{f}/{filename}"),
            None => filename.to_string(),
        };
        let repo = self.client.model(&r.owner, &r.name);
        let revision = r.revision.clone();
        self.call(
            r,
            Arc::new(move |local_only, progress| {
                repo.download_file()
                    .filename(filename.clone())
                    .maybe_revision(revision.clone())
                    .local_files_only(local_only)
                    .maybe_progress(progress)
                    .send()
            }),
        )
    }

    /// Runs `op` offline, or online under the stall watchdog with a fall-back to the cache.
    fn call(&self, r: &HubRef, op: HubCall) -> Result<PathBuf, HubError> {
        let cached = || op(true, None);
        let not_cached = |why: &str| HubError::NotCached {
            reference: r.uri(),
            repo: r.repo_id(),
            cache: self.cache_dir(),
            why: why.to_string(),
        };
        if self.options.offline {
            return match cached() {
                Ok(p) => Ok(p),
                Err(HFError::LocalEntryNotFound { .. }) => Err(not_cached("HF_HUB_OFFLINE is set")),
                Err(error) => Err(HubError::Hub {
                    reference: r.uri(),
                    error: Box::new(error),
                }),
            };
        }
        // A commit hash names immutable content: the cache answers without a round trip.
        if r.revision.as_deref().is_some_and(is_commit_hash) {
            if let Ok(p) = cached() {
                return Ok(p);
            }
        }
        match self.watched(&op) {
            Ok(p) => Ok(p),
            Err(online) => {
                let fallback = match &online {
                    Online::Failed(HFError::RepoNotFound { .. })
                    | Online::Failed(HFError::RevisionNotFound { .. })
                    | Online::Failed(HFError::EntryNotFound { .. }) => None,
                    _ => cached().ok(),
                };
                if let Some(p) = fallback {
                    eprintln!(
                        "warning: {}: the Hub could not be reached; using the cached copy {}",
                        r.uri(),
                        p.display()
                    );
                    return Ok(p);
                }
                Err(match online {
                    Online::Stalled => HubError::Stalled {
                        reference: r.uri(),
                        endpoint: self.endpoint.clone(),
                        secs: self.options.stall_timeout.as_secs(),
                        cache: self.cache_dir(),
                    },
                    Online::Failed(HFError::Request { source, .. }) => HubError::Unreachable {
                        reference: r.uri(),
                        endpoint: self.endpoint.clone(),
                        cache: self.cache_dir(),
                        source: Box::new(source),
                    },
                    Online::Failed(error) => HubError::Hub {
                        reference: r.uri(),
                        error: Box::new(error),
                    },
                })
            }
        }
    }

    /// The network call on a detached worker thread; abandoned when no progress is seen for the
    /// stall timeout (hf-hub has no timeout of its own on its metadata request). An abandoned
    /// call cannot be cancelled: its thread stays blocked until the process exits.
    fn watched(&self, op: &HubCall) -> Result<PathBuf, Online> {
        let activity = Arc::new(Activity::new(self.options.progress));
        let progress = Progress::from(Arc::clone(&activity));
        let (tx, rx) = mpsc::channel();
        let op = Arc::clone(op);
        let spawned = std::thread::Builder::new()
            .name("hf-hub-call".into())
            .spawn(move || {
                let _ = tx.send(op(false, Some(progress)));
            });
        if spawned.is_err() {
            return Err(Online::Failed(HFError::Other(
                "could not start the download thread".into(),
            )));
        }
        let outcome = loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(res) => break res.map_err(Online::Failed),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break Err(Online::Failed(HFError::Other(
                        "the download thread stopped without an answer".into(),
                    )))
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if activity.idle() > self.options.stall_timeout {
                        break Err(Online::Stalled);
                    }
                }
            }
        };
        activity.finish();
        outcome
    }
}

/// One Hub operation: `(local_files_only, progress) -> local path`.
type HubCall = Arc<dyn Fn(bool, Option<Progress>) -> Result<PathBuf, HFError> + Send + Sync>;

enum Online {
    Stalled,
    Failed(HFError),
}

fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Last sign of life of a download, and its progress bar.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    bar: Option<indicatif::ProgressBar>,
}

impl Activity {
    fn new(show: bool) -> Self {
        let bar = show.then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_message("downloading");
            bar
        });
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            bar,
        }
    }

    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        self.start.elapsed() - Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl ProgressHandler for Activity {
    fn on_progress(&self, event: &ProgressEvent) {
        self.touch();
        let (Some(bar), ProgressEvent::Download(d)) = (&self.bar, event) else {
            return;
        };
        match d {
            DownloadEvent::Start { total_bytes, .. } => bar.set_length(*total_bytes),
            DownloadEvent::Progress { files } => {
                let done: u64 = files.iter().map(|f| f.bytes_completed).sum();
                bar.set_position(done.max(bar.position()));
            }
            DownloadEvent::AggregateProgress {
                bytes_completed, ..
            } => bar.set_position(*bytes_completed),
            DownloadEvent::Complete => bar.finish_and_clear(),
        }
    }
}

impl Hub {
    /// A model location given on the command line: `hf://…` is fetched (or found in the
    /// cache) and replaced by its local folder; anything else is returned unchanged.
    pub fn resolve_location(&self, location: &Path) -> Result<PathBuf, HubError> {
        match HubRef::from_location(location) {
            Some(r) => self.model_dir(&r?),
            None => Ok(location.to_path_buf()),
        }
    }
}

/// [`Hub::resolve_location`] with the options of the environment ([`HubOptions::from_env`]);
/// a plain path needs no Hub client.
pub fn resolve_model_location(location: &Path) -> Result<PathBuf, HubError> {
    if HubRef::from_location(location).is_none() {
        return Ok(location.to_path_buf());
    }
    Hub::new(HubOptions::from_env())?.resolve_location(location)
}

#[cfg(test)]
mod tests;
