//! Integration tests: they drive the real `nsync` binary, as a user would.

mod integration {
    pub mod util;

    mod caching;
    mod captioning;
    mod cli;
    mod crash_and_concurrency;
    mod diffusion;
    mod evaluation;
    mod images;
    mod invalid;
}
