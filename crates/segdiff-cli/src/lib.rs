//! The library side of the `segdiff` command-line crate: the pieces that `xtask` shares with the
//! binary. Today that is [`hub`], Hugging Face Hub references (`hf://owner/name`) resolved into
//! the standard Hugging Face cache. The science lives in the other segdiff crates.

pub mod hub;
