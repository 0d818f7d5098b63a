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

    /// The `*.yaml` / `*.yml` files of a subdirectory, sorted, as `(shown, full)` paths. Every
    /// entry that is not a directory is listed, so reading reports a symlink out of the pack or
    /// a special file instead of skipping it; a subdirectory that is itself a symlink out of the
    /// pack is a problem, and nothing in it is listed.
    pub fn yaml_files(&mut self, sub: &str) -> Vec<(PathBuf, PathBuf)> {
        let full_dir = self.dir.join(sub);
        if full_dir.symlink_metadata().is_err() {
            return Vec::new();
        }
        let inside = match (full_dir.canonicalize(), self.dir.canonicalize()) {
            (Ok(real), Ok(root)) => real.starts_with(&root).then_some(real),
            _ => None,
        };
        let Some(real_dir) = inside else {
            self.problems.push(Problem {
                file: self.shown(sub),
                line: None,
                message: "is a symlink out of the pack (or cannot be resolved): refused".into(),
            });
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(&real_dir) else {
            return Vec::new();
        };
        let mut files: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
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

    /// Reads and parses one file of the pack, recording a read or syntax error as a problem.
    pub fn read(&mut self, shown: &Path, full: &Path) -> Option<YamlDoc> {
        YamlDoc::read(shown.to_path_buf(), full, &self.dir)
            .map_err(|p| self.problems.push(p))
            .ok()
    }
}
