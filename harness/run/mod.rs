//! Running a scenario: the [`runner`] measures, the engine executes.
//!
//! The runner gives each variant its life — memory read by the probes, the model loaded,
//! warmed up, timed over repeated generations, dropped, memory read again — and every
//! figure it reads goes through [`clock`] (the device synchronised first) and lands in
//! the record. What executes is the model behind [`generate`] (greedy generation of
//! exactly N tokens, a hook on every step): quantbench's own engine today, one of
//! several engines behind the same interface next. [`workload`] adds the test rows
//! (prompt length, depth, batch, threads) and [`bandwidth`] the machine's measured
//! memory bandwidth they are read against; [`quality`] scores each variant's logits
//! against the run's f32 reference; [`interrupt`] turns SIGINT / SIGTERM into a stop
//! request the runner checks at safe points.

pub mod bandwidth;
pub mod clock;
pub mod generate;
pub mod imatrix;
pub mod interrupt;
pub mod quality;
pub mod runner;
pub mod workload;
