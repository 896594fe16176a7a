//! `hf://` model locations, resolved from a Hugging Face cache laid out as hf-hub writes it
//! (the Hub itself is never contacted: `HF_HUB_OFFLINE=1`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::ok;

const SHA: &str = "89abcdef0123456789abcdef0123456789abcdef";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Puts every file below `src` into `cache` as repository `repo` (`owner/name`) at commit `SHA`:
/// blobs named by content index, snapshot entries as relative symlinks, `refs/main`.
fn cache_repo(cache: &Path, repo: &str, src: &Path) {
    let root = cache.join(format!("models--{}", repo.replace('/', "--")));
    std::fs::create_dir_all(root.join("blobs")).unwrap();
    std::fs::create_dir_all(root.join("refs")).unwrap();
    std::fs::write(root.join("refs/main"), SHA).unwrap();
    let mut stack = vec![src.to_path_buf()];
    let mut n = 0;
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p.strip_prefix(src).unwrap();
            let blob = format!("blob{n:05}");
            n += 1;
            std::fs::copy(&p, root.join("blobs").join(&blob)).unwrap();
            let link = root.join("snapshots").join(SHA).join(rel);
            std::fs::create_dir_all(link.parent().unwrap()).unwrap();
            let up = "../".repeat(rel.components().count() + 1);
            std::os::unix::fs::symlink(format!("{up}blobs/{blob}"), link).unwrap();
        }
    }
}

fn segdiff_offline(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_segdiff"))
        .args(args)
        .env("HF_HUB_CACHE", cache)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap()
}

#[test]
fn hf_locations_load_models_and_segmenters_from_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let demo = workspace().join("assets/mni-demo");
    cache_repo(cache.path(), "segdiff/mni-demo", &demo.join("model"));
    cache_repo(
        cache.path(),
        "segdiff/mni-segmenter",
        &demo.join("segmenter"),
    );

    let out = segdiff_offline(cache.path(), &["model", "inspect", "hf://segdiff/mni-demo"]);
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let local = segdiff_offline(
        cache.path(),
        &["model", "inspect", demo.join("model").to_str().unwrap()],
    );
    ok(&local);
    // Same model, same description (all but the header and the weights path).
    let tail = |s: &str| s.lines().skip(2).collect::<Vec<_>>().join("\n");
    assert_eq!(tail(&text), tail(&String::from_utf8_lossy(&local.stdout)));
    assert!(text.contains("parameters"), "{text}");
    assert!(text.contains(&format!("snapshots/{SHA}/unet")), "{text}");

    // A folder inside the repository, pinned to the commit.
    let unet = format!("hf://segdiff/mni-demo@{SHA}/unet");
    ok(&segdiff_offline(cache.path(), &["model", "inspect", &unet]));

    // The segmenter from the cache segments the bundled held-out slices.
    let out_dir = tempfile::tempdir().unwrap();
    let images = demo.join("data/img/test");
    ok(&segdiff_offline(
        cache.path(),
        &[
            "segmenter",
            "predict",
            "--segmenter",
            "hf://segdiff/mni-segmenter",
            "--images",
            images.to_str().unwrap(),
            "--out",
            out_dir.path().to_str().unwrap(),
        ],
    ));
    let n_in = std::fs::read_dir(&images).unwrap().count();
    let n_out = std::fs::read_dir(out_dir.path()).unwrap().count();
    assert_eq!(n_in, n_out);
}

#[test]
fn uncached_hf_locations_fail_at_once_offline() {
    let cache = tempfile::tempdir().unwrap();
    let out = segdiff_offline(
        cache.path(),
        &["model", "inspect", "hf://nobody/nothing@v2"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hf://nobody/nothing@v2"), "{err}");
    assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
    assert!(err.contains(&cache.path().display().to_string()), "{err}");
    let out = segdiff_offline(cache.path(), &["model", "inspect", "hf://not a repo"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a Hub reference"));
}
