//! Hub references, cache look-ups, offline mode and the stall watchdog, against local caches
//! and a local server that never answers.

use super::*;
use std::net::TcpListener;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// A cache laid out as hf-hub (and huggingface_hub) write it: `refs/main` names the commit,
/// `snapshots/<commit>/<file>` links to `blobs/<etag>`.
fn cache_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("models--segdiff--mni-demo");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::write(repo.join("refs/main"), SHA).unwrap();
    for (i, (path, content)) in files.iter().enumerate() {
        let etag = format!("etag{i:04}");
        std::fs::write(repo.join("blobs").join(&etag), content).unwrap();
        let link = repo.join("snapshots").join(SHA).join(path);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let depth = path.matches('/').count() + 2;
        let target = format!("{}blobs/{etag}", "../".repeat(depth));
        std::os::unix::fs::symlink(target, &link).unwrap();
    }
    cache
}

fn options(cache: &Path, offline: bool, endpoint: Option<String>) -> HubOptions {
    HubOptions {
        cache_dir: Some(cache.to_path_buf()),
        endpoint,
        offline,
        stall_timeout: Duration::from_secs(1),
        progress: false,
    }
}

/// An endpoint where nothing listens: connections are refused at once.
fn refused_endpoint() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

#[test]
fn references_parse() {
    let r: HubRef = "hf://segdiff/mni-demo@v1/unet".parse().unwrap();
    assert_eq!(r.repo_id(), "segdiff/mni-demo");
    assert_eq!(r.revision.as_deref(), Some("v1"));
    assert_eq!(r.folder.as_deref(), Some("unet"));
    assert_eq!(r.uri(), "hf://segdiff/mni-demo@v1/unet");
    let r: HubRef = "timm/inception_v3.tv_in1k".parse().unwrap();
    assert_eq!(
        (r.owner.as_str(), r.name.as_str()),
        ("timm", "inception_v3.tv_in1k")
    );
    assert_eq!((r.revision, r.folder), (None, None));
    let r: HubRef = "hf://a/b@refs%2Fpr%2F3".parse().unwrap();
    assert_eq!(r.revision.as_deref(), Some("refs/pr/3"));
    assert_eq!(r.uri(), "hf://a/b@refs%2Fpr%2F3");
    for bad in [
        "hf://",
        "hf://owner",
        "owner/",
        "/name",
        "a/b@",
        "a b/c",
        "a/../x",
        "..",
        "a/b/../c",
    ] {
        assert!(
            matches!(bad.parse::<HubRef>(), Err(HubError::BadReference(_))),
            "{bad} was accepted"
        );
    }
}

#[test]
fn offline_lookups_answer_from_the_cache() {
    let cache = cache_with(&[
        ("unet/config.json", "{\"a\": 1}"),
        ("unet/diffusion_pytorch_model.safetensors", "weights"),
        ("README.md", "card"),
    ]);
    let hub = Hub::new(options(cache.path(), true, None)).unwrap();
    let r: HubRef = "hf://segdiff/mni-demo/unet".parse().unwrap();
    let dir = hub.model_dir(&r).unwrap();
    assert_eq!(
        dir,
        cache
            .path()
            .join("models--segdiff--mni-demo/snapshots")
            .join(SHA)
            .join("unet")
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("config.json")).unwrap(),
        "{\"a\": 1}"
    );
    let f = hub
        .file(&"segdiff/mni-demo".parse().unwrap(), "README.md")
        .unwrap();
    assert_eq!(std::fs::read_to_string(f).unwrap(), "card");
    // The commit itself is a valid revision; another branch is not cached.
    let pinned: HubRef = format!("segdiff/mni-demo@{SHA}").parse().unwrap();
    assert!(hub.file(&pinned, "README.md").is_ok());
    let other: HubRef = "segdiff/mni-demo@dev".parse().unwrap();
    assert!(matches!(
        hub.file(&other, "README.md"),
        Err(HubError::NotCached { .. })
    ));
    // A folder that the snapshot lacks is named.
    let missing: HubRef = "segdiff/mni-demo/vae".parse().unwrap();
    let err = hub.model_dir(&missing).unwrap_err().to_string();
    assert!(err.contains("has no `vae`"), "{err}");
}

#[test]
fn offline_misses_fail_with_the_repository_and_cache_named() {
    let cache = tempfile::tempdir().unwrap();
    let hub = Hub::new(options(cache.path(), true, None)).unwrap();
    let err = hub
        .model_dir(&"hf://someone/absent".parse().unwrap())
        .unwrap_err();
    assert!(matches!(err, HubError::NotCached { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("hf://someone/absent"), "{msg}");
    assert!(msg.contains(&cache.path().display().to_string()), "{msg}");
    assert!(msg.contains("HF_HUB_OFFLINE"), "{msg}");
    assert!(msg.contains("cargo xtask weights someone/absent"), "{msg}");
}

#[test]
fn an_unreachable_hub_falls_back_to_the_cache() {
    let cache = cache_with(&[("config.json", "{}")]);
    let hub = Hub::new(options(cache.path(), false, Some(refused_endpoint()))).unwrap();
    let dir = hub.model_dir(&"segdiff/mni-demo".parse().unwrap()).unwrap();
    assert!(dir.join("config.json").is_file());
    // Nothing cached: the error names the endpoint and the cache.
    let err = hub
        .model_dir(&"segdiff/absent".parse().unwrap())
        .unwrap_err();
    assert!(matches!(err, HubError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
    // The transport error is the source, once: not also inside the message.
    let cause = std::error::Error::source(&err).map(|c| c.to_string());
    let cause = cause.unwrap_or_default();
    assert!(
        !cause.is_empty() && !err.to_string().contains(&cause),
        "{err}: {cause}"
    );
    let chain = format!("{:#}", anyhow::Error::from(err));
    assert_eq!(chain.matches(&cause).count(), 1, "{chain}");
}

/// A server that accepts connections and never answers: hf-hub alone would wait forever.
#[test]
fn a_silent_hub_is_abandoned_after_the_stall_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let empty = tempfile::tempdir().unwrap();
    let hub = Hub::new(options(empty.path(), false, Some(endpoint.clone()))).unwrap();
    let err = hub
        .file(&"someone/absent".parse().unwrap(), "config.json")
        .unwrap_err();
    assert!(matches!(err, HubError::Stalled { secs: 1, .. }), "{err:?}");
    assert!(err.to_string().contains("SEGDIFF_HUB_TIMEOUT"), "{err}");
    // With the file cached, the stalled call gives way to the cache.
    let cache = cache_with(&[("config.json", "{}")]);
    let hub = Hub::new(options(cache.path(), false, Some(endpoint))).unwrap();
    let f = hub
        .file(&"segdiff/mni-demo".parse().unwrap(), "config.json")
        .unwrap();
    assert_eq!(std::fs::read_to_string(f).unwrap(), "{}");
}

#[test]
fn plain_paths_pass_through() {
    let p = Path::new("assets/mni-demo/model");
    assert_eq!(resolve_model_location(p).unwrap(), p);
}

#[test]
fn offline_switch_reads_common_spellings() {
    for v in ["1", "true", "YES", "on"] {
        assert!(truthy(v), "{v}");
    }
    for v in ["0", "false", "", "no"] {
        assert!(!truthy(v), "{v}");
    }
}
