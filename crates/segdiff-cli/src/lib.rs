//! The library side of the `segdiff` command-line crate: the pieces that `xtask` shares with the
//! binary: [`hub`], Hugging Face Hub references (`hf://owner/name`) resolved into the standard
//! Hugging Face cache, and [`allocator`], the settings of the mimalloc allocator both binaries
//! use. The science lives in the other segdiff crates.

pub mod allocator;
pub mod hub;
