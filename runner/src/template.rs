//! The `{pack_dir}`, `{env_dir}`, `{interpreter}`, `{manifest_path}` templates of runtime YAML.

use std::path::Path;

/// Values for the templates of one command or variable.
#[derive(Debug, Clone)]
pub struct Vars {
    /// `{pack_dir}`.
    pack_dir: String,
    /// `{env_dir}`.
    env_dir: String,
    /// `{interpreter}`.
    interpreter: String,
    /// `{manifest_path}`.
    manifest_path: String,
}

impl Vars {
    /// Template values; a missing manifest renders as an empty string.
    pub fn new(
        pack_dir: &Path,
        env_dir: &Path,
        interpreter: &Path,
        manifest: Option<&Path>,
    ) -> Self {
        let s = |p: &Path| p.to_string_lossy().into_owned();
        Vars {
            pack_dir: s(pack_dir),
            env_dir: s(env_dir),
            interpreter: s(interpreter),
            manifest_path: manifest.map(s).unwrap_or_default(),
        }
    }

    /// Replaces every template in `text`. Unknown `{…}` are left as they are.
    pub fn render(&self, text: &str) -> String {
        if !text.contains('{') {
            return text.to_string();
        }
        text.replace("{pack_dir}", &self.pack_dir)
            .replace("{env_dir}", &self.env_dir)
            .replace("{interpreter}", &self.interpreter)
            .replace("{manifest_path}", &self.manifest_path)
    }

    /// Renders each element of a command.
    pub fn render_all(&self, argv: &[String]) -> Vec<String> {
        argv.iter().map(|a| self.render(a)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_template() {
        let v = Vars::new(
            Path::new("/p"),
            Path::new("/e"),
            Path::new("/bin/py"),
            Some(Path::new("/p/req.txt")),
        );
        assert_eq!(
            v.render("{interpreter} -r {manifest_path} in {env_dir} for {pack_dir} {other}"),
            "/bin/py -r /p/req.txt in /e for /p {other}"
        );
    }
}
