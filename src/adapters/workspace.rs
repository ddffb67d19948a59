//! The local file system as the spec sees it: reading the spec and the files it names,
//! and hashing the build-context inputs that go into content hashes.

use std::io;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use globset::{Glob, GlobSetBuilder};

use crate::core::content_hash::{InputFile, Recipe, sha256_hex};
use crate::core::dockerignore::{DockerIgnore, kept};
use crate::core::spec::{Site, Spec, SpecEnv, SpecError, parse_spec, spec_text};

/// The real process environment and file system.
pub(crate) struct FsEnv;

impl SpecEnv for FsEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn is_file(&self, path: &Path) -> bool {
        path.is_file()
    }
    fn is_dir(&self, path: &Path) -> bool {
        // The spec's own directory may be named as "" when the spec is a bare file name.
        path.as_os_str().is_empty() || path.is_dir()
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

/// Reads and validates the spec at `path`. A missing, unreadable or non-UTF-8 spec is a
/// spec error too (exit code 2), located at the file itself or its first bad byte.
pub(crate) fn load_spec(path: &Path) -> Result<Spec, SpecError> {
    let at_file = |message: String| SpecError { site: Site { file: path.to_path_buf(), line: 0, column: 0, key: String::new() }, message };
    let hint = "give its path with --spec; the default is split-build.yml";
    match std::fs::metadata(path) {
        // Reading a device or a pipe may never end (`/dev/zero`), so only files are read.
        Ok(m) if !m.is_file() => return Err(at_file(format!("the spec is not a regular file (a directory, device or pipe): {hint}"))),
        Ok(_) => {}
        Err(e) => return Err(at_file(format!("cannot read the spec: {e} ({hint})"))),
    }
    let bytes = std::fs::read(path).map_err(|e| at_file(format!("cannot read the spec: {e} ({hint})")))?;
    parse_spec(spec_text(&bytes, path)?, path, &FsEnv)
}

/// The files below `context` that match any of `globs` (paths relative to the context,
/// `/`-separated), in path order. `.git` is never an input, and neither is a file the
/// context's `.dockerignore` leaves out: Docker does not send it, so it cannot change the
/// image and must not change its hash.
pub(crate) fn input_files(context: &Path, globs: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let mut set = GlobSetBuilder::new();
    for g in globs {
        set.add(Glob::new(g).with_context(|| format!("reading input pattern `{g}`"))?);
    }
    let set = set.build().context("compiling input patterns")?;
    let root = if context.as_os_str().is_empty() { Path::new(".") } else { context };
    let ignore = read_dockerignore(root)?;
    let mut out: Vec<PathBuf> = context_entries(root, &ignore, |rel| rel == ".git")?
        .into_iter()
        .filter(|(rel, ft)| ft.is_file() && set.is_match(rel))
        .map(|(rel, _)| PathBuf::from(rel))
        .collect();
    out.sort();
    Ok(out)
}

/// The context's `.dockerignore` (none: nothing left out). A pattern Docker would refuse is
/// an error here too, rather than a context that differs from Docker's.
pub(crate) fn read_dockerignore(root: &Path) -> anyhow::Result<DockerIgnore> {
    let path = root.join(".dockerignore");
    match std::fs::read_to_string(&path) {
        Ok(text) => DockerIgnore::parse(&text).with_context(|| format!("reading `{}`", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(DockerIgnore::default()),
        Err(e) => Err(e).with_context(|| format!("reading `{}`", path.display())),
    }
}

/// The entries of a context that Docker would send, as `/`-separated relative paths in walk
/// order with their types: what `ignore` does not leave out, and the directories holding
/// what is kept. Directories for which `skip` says yes are not entered at all, nor are
/// left-out directories unless an exception (`!`) may keep something inside.
pub(crate) fn context_entries(
    root: &Path,
    ignore: &DockerIgnore,
    skip: impl Fn(&str) -> bool,
) -> anyhow::Result<Vec<(String, std::fs::FileType)>> {
    let may_prune = !ignore.has_exceptions();
    let mut walked = Vec::new();
    let walker = walkdir::WalkDir::new(root).sort_by_file_name().min_depth(1).into_iter().filter_entry(|e| {
        if !e.file_type().is_dir() {
            return true;
        }
        let rel = relative(root, e.path());
        !(skip(&rel) || (may_prune && ignore.excludes(&rel)))
    });
    for entry in walker {
        let entry = entry.with_context(|| format!("listing `{}`", root.display()))?;
        walked.push((relative(root, entry.path()), entry.file_type()));
    }
    let keep = kept(ignore, walked.iter().map(|(p, ft)| (p.as_str(), ft.is_dir())));
    Ok(walked.into_iter().zip(keep).filter_map(|(e, k)| k.then_some(e)).collect())
}

/// `path` below `root` as a `/`-separated relative path, the form `.dockerignore` speaks.
fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

/// Reads a Dockerfile and the context inputs into the [`Recipe`] a hash is computed from.
pub(crate) fn recipe(context: &Path, dockerfile: &Path, target: Option<&str>, globs: &[String]) -> anyhow::Result<Recipe> {
    let bytes = std::fs::read(dockerfile).with_context(|| format!("reading `{}`", dockerfile.display()))?;
    let root = if context.as_os_str().is_empty() { Path::new(".") } else { context };
    let mut inputs = Vec::new();
    for rel in input_files(context, globs)? {
        let data = std::fs::read(root.join(&rel)).with_context(|| format!("reading input `{}`", rel.display()))?;
        let path = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
        inputs.push(InputFile { path, sha256: sha256_hex(&data) });
    }
    Ok(Recipe { dockerfile_sha256: sha256_hex(&bytes), target: target.map(str::to_owned), inputs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_matched_relative_to_the_context_and_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in ["b.txt", "a/x.py", "a/y.txt", ".git/HEAD", "Dockerfile"] {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, f).unwrap();
        }
        let all = input_files(root, &["**".into()]).unwrap();
        assert_eq!(all, ["Dockerfile", "a/x.py", "a/y.txt", "b.txt"].map(PathBuf::from));
        let some = input_files(root, &["a/*.py".into(), "b.txt".into()]).unwrap();
        assert_eq!(some, ["a/x.py", "b.txt"].map(PathBuf::from));
        let r1 = recipe(root, &root.join("Dockerfile"), None, &["**".into()]).unwrap();
        std::fs::write(root.join("a/y.txt"), "changed").unwrap();
        let r2 = recipe(root, &root.join("Dockerfile"), None, &["**".into()]).unwrap();
        assert_ne!(r1, r2);
        assert_eq!(r1.inputs[1].path, "a/x.py");
    }

    /// The base hash's inputs leave out what Docker leaves out of the context, by Docker's
    /// rules: `*.md` is a top-level pattern, a `!` exception brings a file back.
    #[test]
    fn inputs_honour_dockerignore_as_docker_does() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in ["README.md", "docs/x.md", "docs/keep.txt", "build/out.bin", "build/keep.bin", "src/a.rs"] {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, f).unwrap();
        }
        std::fs::write(root.join(".dockerignore"), "*.md\nbuild\n!build/keep.bin\n").unwrap();
        let all = input_files(root, &["**".into()]).unwrap();
        assert_eq!(all, [".dockerignore", "build/keep.bin", "docs/keep.txt", "docs/x.md", "src/a.rs"].map(PathBuf::from));
        let entries: Vec<String> =
            context_entries(root, &read_dockerignore(root).unwrap(), |_| false).unwrap().into_iter().map(|(p, _)| p).collect();
        assert_eq!(entries, [".dockerignore", "build", "build/keep.bin", "docs", "docs/keep.txt", "docs/x.md", "src", "src/a.rs"]);
    }
}
