//! The state of one pack load: where the pack is, and every problem and warning found so far.
//!
//! Each rule file records into one [`Ctx`] instead of returning early, so a rejected pack reports
//! all its problems at once.

use std::path::{Path, PathBuf};

use super::problem::Problem;
use super::yaml::YamlDoc;

/// The loading state of one pack: where it is and what went wrong so far.
pub struct Ctx {
    /// The pack directory as given; messages name files under it.
    pub dir: PathBuf,
    /// Problems that reject the pack.
    pub problems: Vec<Problem>,
    /// Likely mistakes that do not stop the load.
    pub warnings: Vec<Problem>,
}

impl Ctx {
    /// Starts the load of the pack in `dir`, with nothing found yet.
    pub fn new(dir: &Path) -> Ctx {
        Ctx {
            dir: dir.to_path_buf(),
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// The path of `rel` as messages show it: under the pack directory as the user gave it.
    pub fn shown(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// The `*.yaml` / `*.yml` files of a subdirectory, sorted, as `(shown, full)` paths.
    pub fn yaml_files(&self, sub: &str) -> Vec<(PathBuf, PathBuf)> {
        let full_dir = self.dir.join(sub);
        let Ok(entries) = std::fs::read_dir(&full_dir) else {
            return Vec::new();
        };
        let mut files: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|n| {
                let rel = format!("{sub}/{n}");
                (self.shown(&rel), self.dir.join(&rel))
            })
            .collect()
    }

    /// Reads and parses one file, recording a read or syntax error as a problem.
    pub fn read(&mut self, shown: &Path, full: &Path) -> Option<YamlDoc> {
        YamlDoc::read(shown.to_path_buf(), full)
            .map_err(|p| self.problems.push(p))
            .ok()
    }
}
