//! Trends across many runs: every results.json under some folders, grouped by scenario,
//! variant and hardware fingerprint (`report::history` writes history.csv and one trend
//! chart per metric).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::record::figures::Figure;
use crate::record::RunRecord;

/// One variant of one run, flattened.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub time: DateTime<Utc>,
    pub scenario: String,
    /// The variant's key ([`crate::precision::Quantization::key`]).
    pub variant: String,
    pub fingerprint: String,
    pub cpu_model: String,
    pub device: String,
    pub git_commit: String,
    /// The value of each of [`FOLLOWED`]'s figures, in its order (for the charts).
    pub values: Vec<Option<f64>>,
    /// The same figures as csv cells ([`Figure::cell`]: bytes exact).
    pub cells: Vec<String>,
    pub file: PathBuf,
}

/// The figures history follows, by their names in [`crate::record::figures::FIGURES`].
pub const FOLLOWED: [&str; 4] = [
    "generate_seconds",
    "tokens_per_second",
    "weights_bytes",
    "rss_peak_bytes",
];

/// The followed figures themselves.
pub fn followed() -> impl Iterator<Item = Figure> {
    FOLLOWED.iter().map(|n| Figure::named(n))
}

impl Point {
    /// A followed figure's value as a trend chart draws it (bytes in MB).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let i = FOLLOWED.iter().position(|n| *n == name)?;
        let v = self.values[i]?;
        Some(if Figure::named(name).unit == "B" {
            v / 1e6
        } else {
            v
        })
    }

    /// The line a point belongs to in a trend chart.
    pub fn series(&self) -> String {
        format!("{} @ {}", self.variant, self.fingerprint)
    }
}

/// Every results.json under `dirs` (files may be named directly), sorted by path.
pub fn find_results(dirs: &[PathBuf]) -> Vec<PathBuf> {
    use std::collections::HashSet;
    use std::os::unix::fs::MetadataExt;
    type Seen = HashSet<(u64, u64)>;
    // Each folder and each file is taken once by its device and inode: a symbolic link
    // back up the tree (a loop) or a second way to one run adds nothing.
    fn first_visit(p: &Path, seen: &mut Seen) -> bool {
        std::fs::metadata(p).is_ok_and(|m| seen.insert((m.dev(), m.ino())))
    }
    fn walk(p: &Path, out: &mut Vec<PathBuf>, dirs: &mut Seen, files: &mut Seen, depth: usize) {
        if p.is_file() {
            if first_visit(p, files) {
                out.push(p.to_path_buf());
            }
        } else if p.is_dir() && depth < 16 && first_visit(p, dirs) {
            if let Ok(rd) = std::fs::read_dir(p) {
                let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
                entries.sort();
                for path in entries {
                    if path.is_dir() {
                        walk(&path, out, dirs, files, depth + 1);
                    } else if path.file_name().is_some_and(|n| n == "results.json")
                        && first_visit(&path, files)
                    {
                        out.push(path);
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    let (mut dirs_seen, mut files_seen) = (Seen::new(), Seen::new());
    for d in dirs {
        walk(d, &mut out, &mut dirs_seen, &mut files_seen, 0);
    }
    out.sort();
    out
}

/// Read every file; the ones that cannot be read come back as (file, problem).
pub fn load(files: &[PathBuf]) -> (Vec<Point>, Vec<(PathBuf, String)>) {
    let mut points = Vec::new();
    let mut problems = Vec::new();
    for f in files {
        match crate::report::read_results(f) {
            Ok(run) => points.extend(points_of(&run, f)),
            Err(e) => problems.push((f.clone(), format!("{e:#}"))),
        }
    }
    points.sort_by(|a, b| a.time.cmp(&b.time).then(a.variant.cmp(&b.variant)));
    (points, problems)
}

fn points_of(run: &RunRecord, file: &Path) -> Vec<Point> {
    let time = DateTime::parse_from_rfc3339(&run.started_at)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default();
    run.variants
        .iter()
        .filter(|v| v.is_ok())
        .map(|v| Point {
            time,
            scenario: run.scenario.name.clone(),
            variant: v.key(),
            fingerprint: run.environment.hardware_fingerprint.clone(),
            cpu_model: run.environment.cpu_model.clone(),
            device: run.environment.device.clone(),
            git_commit: run.environment.git_commit.clone(),
            values: followed().map(|f| f.value(v)).collect(),
            cells: followed().map(|f| f.cell(v)).collect(),
            file: file.to_path_buf(),
        })
        .collect()
}
