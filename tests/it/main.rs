//! The integration tests, one binary (as ripgrep has it): each file a module, linked once against the
//! library and candle instead of once per file. Run one file's tests with a filter, e.g.
//! `cargo test --test it serve::`.

mod common;

mod auto_regions;
mod auto_sam_parity;
mod cli;
mod clip_parity;
mod decode;
mod full_size;
mod fused_maps;
mod gpu;
mod invert_parity;
mod pipeline;
mod region_query;
mod reliability;
mod sam_parity;
mod serve;
mod weights_loading;
