//! An `--options FILE` TOML file, expanded into command-line flags for a few subcommands.
#![no_main]
use std::ffi::OsString;

use libfuzzer_sys::fuzz_target;
use segdiff_cli::options_file::expand;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let path = common::scratch_file("options.toml", data);
    for command in [&["train"][..], &["sample"], &["segmenter", "train"]] {
        let mut args: Vec<OsString> = vec!["segdiff".into()];
        args.extend(command.iter().map(OsString::from));
        args.push("--options".into());
        args.push(path.clone().into());
        let _ = expand(args);
    }
});
