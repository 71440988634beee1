//! cohort: version control and provenance for medical-imaging datasets.
//!
//! A library with a thin CLI on top (`src/main.rs`, `src/cli/`). The library never prints and
//! never reads the environment: callers pass a [`repo::Context`] and a [`progress::Progress`].
//! See `docs/architecture.md` for the module map and `docs/format.md` for every on-disk format.

pub mod annotate;
pub mod card;
pub mod cardgen;
pub mod catalog;
pub mod deid;
pub mod deidrun;
pub mod dicom;
pub mod dicomweb;
pub mod phiscan;
pub mod treebuild;
pub mod verify;
pub mod volume;
pub mod dataset;
pub mod diff;
pub mod export;
pub mod exportcheck;
pub mod fsutil;
pub mod id;
pub mod ignorefile;
pub mod index;
pub mod ingest;
pub(crate) mod jpeg12;
pub(crate) mod jpegmarker;
pub(crate) mod jpegls;
pub mod lineage;
pub mod maint;
pub mod merge;
pub mod mlexport;
pub mod nifti;
pub mod object;
pub mod pack;
pub mod pathsel;
pub mod progress;
pub mod prov;
pub mod query;
pub mod provgraph;
pub mod remote;
pub mod remotegc;
pub mod repo;
pub mod seg;
pub mod stats;
mod tablemerge;
mod threeway;
pub mod run;
pub mod sign;
pub mod split;
pub mod store;
pub mod worktree;

pub use id::ObjectId;
pub use repo::{Context, Repo, RepoError};

/// Activity output roles whose value is an object id that the commit keeps alive (gc, fsck).
pub const OBJECT_ROLES: &[&str] = &[deidrun::REPORT_ROLE];
