//! Run options from a TOML file (`--options FILE`) or a built-in preset (`--preset NAME`).
//!
//! A file holds one table per subcommand (`[train]`, `[sample]`, `[segmenter.train]`, …) whose
//! keys are that subcommand's long flags (`batch_size` or `batch-size`). They are turned into
//! command-line arguments placed before the user's own, so anything typed on the command line
//! wins, and clap validates everything as usual.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Built-in presets: the paper's datasets and the AMOS adaptation.
pub const PRESETS: [(&str, &str); 3] = [
    ("breast-mri", include_str!("presets/breast-mri.toml")),
    ("ct-organ", include_str!("presets/ct-organ.toml")),
    ("amos", include_str!("presets/amos.toml")),
];

/// Expands `--options FILE` and `--preset NAME` in `args` (program name first).
pub fn expand(args: Vec<OsString>) -> Result<Vec<OsString>> {
    let strs: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut sources: Vec<(String, toml::Table)> = Vec::new();
    let mut rest: Vec<OsString> = Vec::with_capacity(args.len());
    let mut i = 0;
    while i < args.len() {
        let a = strs[i].as_str();
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f == "--options" || f == "--preset" => (f, Some(v.to_string())),
            _ => (a, None),
        };
        if flag == "--options" || flag == "--preset" {
            let value = match inline {
                Some(v) => v,
                None => {
                    i += 1;
                    strs.get(i)
                        .cloned()
                        .with_context(|| format!("{flag} needs a value"))?
                }
            };
            sources.push(if flag == "--options" {
                load_file(Path::new(&value))?
            } else {
                load_preset(&value)?
            });
        } else {
            rest.push(args[i].clone());
        }
        i += 1;
    }
    if sources.is_empty() {
        return Ok(args);
    }
    // The subcommand path: the leading words that are not flags (e.g. `segmenter train`).
    let path: Vec<&str> = strs[1..]
        .iter()
        .filter(|s| !s.starts_with('-'))
        .take(2)
        .map(String::as_str)
        .collect();
    let given: Vec<String> = rest
        .iter()
        .map(|a| {
            a.to_string_lossy()
                .split('=')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let mut injected: Vec<OsString> = Vec::new();
    // Later sources override earlier ones; a flag is injected once.
    let mut seen: Vec<String> = Vec::new();
    for (origin, table) in sources.iter().rev() {
        let Some(section) = section_for(table, &path) else {
            continue;
        };
        for (key, value) in section {
            let flag = format!("--{}", key.replace('_', "-"));
            if given.contains(&flag) || seen.contains(&flag) {
                continue;
            }
            seen.push(flag.clone());
            push_value(&mut injected, &flag, value)
                .with_context(|| format!("{origin}: key {key}"))?;
        }
    }
    // Insert right after the subcommand words so the flags bind to that subcommand.
    let mut out = Vec::with_capacity(rest.len() + injected.len());
    let mut words = 0;
    let mut inserted = false;
    for (j, a) in rest.into_iter().enumerate() {
        let s = a.to_string_lossy().into_owned();
        out.push(a);
        if j > 0 && !s.starts_with('-') && words < path.len() {
            words += 1;
            if words == path.len() {
                out.append(&mut injected);
                inserted = true;
            }
        }
    }
    if !inserted {
        out.append(&mut injected);
    }
    Ok(out)
}

fn section_for<'a>(table: &'a toml::Table, path: &[&str]) -> Option<&'a toml::Table> {
    let first = table.get(*path.first()?)?.as_table()?;
    if let Some(second) = path.get(1) {
        if let Some(t) = first.get(*second).and_then(|v| v.as_table()) {
            return Some(t);
        }
    }
    // Keep only scalar entries when the subcommand has no nested table of its own.
    Some(first)
}

fn push_value(out: &mut Vec<OsString>, flag: &str, value: &toml::Value) -> Result<()> {
    match value {
        toml::Value::Boolean(true) => out.push(flag.into()),
        toml::Value::Boolean(false) => {}
        toml::Value::String(s) => {
            out.push(flag.into());
            out.push(s.into());
        }
        toml::Value::Integer(n) => {
            out.push(flag.into());
            out.push(n.to_string().into());
        }
        toml::Value::Float(x) => {
            out.push(flag.into());
            out.push(x.to_string().into());
        }
        toml::Value::Array(items) => {
            let parts: Result<Vec<String>> = items
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s.clone()),
                    toml::Value::Integer(n) => Ok(n.to_string()),
                    toml::Value::Float(x) => Ok(x.to_string()),
                    other => bail!("unsupported list item {other}"),
                })
                .collect();
            out.push(flag.into());
            out.push(parts?.join(",").into());
        }
        toml::Value::Table(_) => {}
        other => bail!("unsupported value {other}"),
    }
    Ok(())
}

fn load_file(path: &Path) -> Result<(String, toml::Table)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --options {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("--options {}: not valid TOML", path.display()))?;
    Ok((path.display().to_string(), table))
}

fn load_preset(name: &str) -> Result<(String, toml::Table)> {
    let Some((_, text)) = PRESETS.iter().find(|(n, _)| *n == name) else {
        let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
        bail!(
            "--preset {name}: unknown preset (available: {})",
            names.join(", ")
        );
    };
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("built-in preset {name}"))?;
    Ok((format!("preset {name}"), table))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn strs(v: Vec<OsString>) -> Vec<String> {
        v.into_iter().map(|s| s.into_string().unwrap()).collect()
    }

    #[test]
    fn config_keys_become_flags_and_the_command_line_wins() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("run.toml");
        std::fs::write(&f, "[train]\nbatch_size = 4\nepochs = 7\nablation = true\nema = false\n[sample]\nsteps = 9\n").unwrap();
        let out = strs(
            expand(os(&[
                "segdiff",
                "train",
                "--options",
                f.to_str().unwrap(),
                "--epochs",
                "2",
            ]))
            .unwrap(),
        );
        assert_eq!(out[..2], ["segdiff", "train"]);
        assert!(
            out.windows(2).any(|w| w == ["--batch-size", "4"]),
            "{out:?}"
        );
        assert!(out.windows(2).any(|w| w == ["--epochs", "2"]));
        assert!(
            !out.iter()
                .any(|a| a == "7" || a == "--ema" || a == "--steps"),
            "{out:?}"
        );
        assert!(out.contains(&"--ablation".to_string()));
    }

    #[test]
    fn presets_exist_parse_and_unknown_names_are_errors() {
        for (name, _) in PRESETS {
            load_preset(name).unwrap();
        }
        let err = expand(os(&["segdiff", "train", "--preset", "nope"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope") && err.contains("ct-organ"), "{err}");
        let out = strs(
            expand(os(&[
                "segdiff",
                "train",
                "--preset=ct-organ",
                "--data",
                "d",
            ]))
            .unwrap(),
        );
        assert!(
            out.windows(2).any(|w| w == ["--num-classes", "6"]),
            "{out:?}"
        );
    }

    #[test]
    fn nested_subcommands_use_their_own_table() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("run.toml");
        std::fs::write(&f, "[segmenter.train]\nepochs = 3\n").unwrap();
        let out = strs(
            expand(os(&[
                "segdiff",
                "segmenter",
                "train",
                "--options",
                f.to_str().unwrap(),
            ]))
            .unwrap(),
        );
        assert_eq!(out, ["segdiff", "segmenter", "train", "--epochs", "3"]);
    }
}
