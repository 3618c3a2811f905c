//! Fetching an instance's artifacts into its sandbox before it starts, with Marathon's (and
//! Mesos' fetcher's) semantics: `http(s)://` and `file://` URIs; archives extracted where they
//! land; `executable` files made so; `cache` kept on the agent, keyed by URI, and used for
//! later instances instead of fetching again.
//!
//! Blocking: the agent runs it on a blocking thread while the instance is `Staging`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use baton_api::app::Fetch;

/// Connecting to an artifact's server gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Waiting for a response (its headers) gives up after this long; the body may take as
/// long as it takes.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why one artifact could not be fetched: the URI and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    pub uri: String,
    pub reason: String,
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fetching {}: {}", self.uri, self.reason)
    }
}

/// Where an agent keeps what it fetched with `cache: true`.
pub fn cache_dir(work_dir: &Path) -> PathBuf {
    work_dir.join("fetch-cache")
}

/// Fetches every artifact into `sandbox`, in order; `limit_bytes` caps each download (the
/// instance's disk, when it has one); `owner` gets everything fetched (the app's user).
pub fn fetch_all(
    items: &[Fetch],
    sandbox: &Path,
    cache: &Path,
    limit_bytes: Option<u64>,
    owner: Option<(u32, u32)>,
) -> Result<(), FetchError> {
    std::fs::create_dir_all(sandbox)
        .map_err(|e| FetchError { uri: String::new(), reason: format!("creating the sandbox: {e}") })?;
    for item in items {
        fetch_one(item, sandbox, cache, limit_bytes).map_err(|reason| FetchError { uri: item.uri.clone(), reason })?;
    }
    if let Some((uid, gid)) = owner {
        chown_tree(sandbox, uid, gid).map_err(|e| FetchError {
            uri: items.first().map(|i| i.uri.clone()).unwrap_or_default(),
            reason: format!("handing the fetched files to uid {uid}: {e}"),
        })?;
    }
    Ok(())
}

fn fetch_one(item: &Fetch, sandbox: &Path, cache: &Path, limit: Option<u64>) -> Result<(), String> {
    let name = item.file_name().ok_or("the URI names no file; set destPath")?;
    let dest = sandbox.join(&name);
    if !dest.starts_with(sandbox) || name.split('/').any(|p| p == "..") {
        return Err(format!("destPath {name:?} leaves the sandbox"));
    }
    let dir = dest.parent().unwrap_or(sandbox).to_path_buf();
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    if item.cache {
        let cached = cache.join(cache_key(&item.uri));
        if !cached.is_file() {
            std::fs::create_dir_all(cache).map_err(|e| format!("creating the cache {}: {e}", cache.display()))?;
            download(&item.uri, &cached, limit)?;
        }
        std::fs::copy(&cached, &dest).map_err(|e| format!("copying from the cache {}: {e}", cached.display()))?;
    } else {
        download(&item.uri, &dest, limit)?;
    }
    if item.executable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("making {} executable: {e}", dest.display()))?;
    }
    if item.extract
        && let Some(kind) = Archive::of(&name)
    {
        extract(kind, &dest, &dir).map_err(|e| format!("extracting {name} ({}): {e}", kind.name()))?;
    }
    Ok(())
}

/// The cache file's name for a URI: its SHA-256, so any URI is a safe file name.
fn cache_key(uri: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(uri.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes what `uri` holds to `dest`, through a temporary file in the same directory renamed
/// at the end, so `dest` is whole or absent.
fn download(uri: &str, dest: &Path, limit: Option<u64>) -> Result<(), String> {
    let dir = dest.parent().ok_or("no directory to fetch into")?;
    let mut temp =
        tempfile::NamedTempFile::new_in(dir).map_err(|e| format!("creating a file in {}: {e}", dir.display()))?;
    let written = if let Some(path) = uri.strip_prefix("file://") {
        let path = percent_decode(path)?;
        let mut file = File::open(&path).map_err(|e| format!("opening {path}: {e}"))?;
        copy_limited(&mut file, temp.as_file_mut(), limit)?
    } else if uri.starts_with("http://") || uri.starts_with("https://") {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(RESPONSE_TIMEOUT))
            .build()
            .into();
        let mut response = agent.get(uri).call().map_err(|e| match e {
            ureq::Error::StatusCode(code) => format!("the server answered HTTP {code}"),
            other => other.to_string(),
        })?;
        let mut body = response.body_mut().with_config().limit(u64::MAX).reader();
        copy_limited(&mut body, temp.as_file_mut(), limit)?
    } else {
        return Err("only http://, https:// and file:// URIs are fetched".into());
    };
    temp.as_file_mut().flush().map_err(|e| e.to_string())?;
    temp.persist(dest).map_err(|e| format!("writing {}: {}", dest.display(), e.error))?;
    tracing::debug!(uri, dest = %dest.display(), bytes = written, "fetched");
    Ok(())
}

/// Copies at most `limit` bytes; more is an error saying so.
fn copy_limited(from: &mut dyn Read, to: &mut File, limit: Option<u64>) -> Result<u64, String> {
    let cap = limit.unwrap_or(u64::MAX);
    let copied = io::copy(&mut from.take(cap.saturating_add(1)), to).map_err(|e| e.to_string())?;
    if copied > cap {
        return Err(format!("it is larger than the instance's disk of {} MiB", cap >> 20));
    }
    Ok(copied)
}

/// `%XX` escapes in a `file://` path decoded.
fn percent_decode(path: &str) -> Result<String, String> {
    baton_api::app::percent_decoded(path).ok_or_else(|| "the path has a malformed %-escape".to_string())
}

/// The archive kinds extracted, known by the file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Archive {
    Tar,
    TarGz,
    Zip,
}

impl Archive {
    fn of(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
            Some(Archive::TarGz)
        } else if lower.ends_with(".tar") {
            Some(Archive::Tar)
        } else if lower.ends_with(".zip") {
            Some(Archive::Zip)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Archive::Tar => "tar",
            Archive::TarGz => "gzipped tar",
            Archive::Zip => "zip",
        }
    }
}

/// Extracts `archive` into `into`; entries that would land outside it are refused by the
/// tar and zip readers.
fn extract(kind: Archive, archive: &Path, into: &Path) -> Result<(), String> {
    let file = File::open(archive).map_err(|e| e.to_string())?;
    let unpack_tar = |reader: Box<dyn Read>| -> Result<(), String> {
        let mut tar = tar::Archive::new(reader);
        tar.set_preserve_permissions(true);
        tar.set_overwrite(true);
        tar.unpack(into).map_err(|e| e.to_string())
    };
    match kind {
        Archive::Tar => unpack_tar(Box::new(io::BufReader::new(file))),
        Archive::TarGz => unpack_tar(Box::new(flate2::read::GzDecoder::new(io::BufReader::new(file)))),
        Archive::Zip => {
            let mut zip = zip::ZipArchive::new(io::BufReader::new(file)).map_err(|e| e.to_string())?;
            zip.extract(into).map_err(|e| e.to_string())
        }
    }
}

/// Gives everything under `dir` (and `dir`) to `uid`:`gid`, symlinks themselves not their
/// targets.
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let (uid, gid) = (Some(nix::unistd::Uid::from_raw(uid)), Some(nix::unistd::Gid::from_raw(gid)));
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        nix::unistd::fchownat(nix::fcntl::AT_FDCWD, &path, uid, gid, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(io::Error::from)?;
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(())
}

/// The size of everything under `dir` on disk, bytes (allocated blocks, as `du` counts),
/// not following symlinks.
pub fn disk_usage(dir: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            // Removed while walking (a rotated log): nothing to count.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        total = total.saturating_add(meta.blocks().saturating_mul(512));
        if meta.is_dir() {
            match std::fs::read_dir(&path) {
                Ok(entries) => stack.extend(entries.filter_map(|e| e.ok().map(|e| e.path()))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(json: serde_json::Value) -> Fetch {
        serde_json::from_value(json).unwrap()
    }

    /// A gzipped tar with `bin/hello` (executable) and `README`.
    fn tarball(path: &Path) {
        let file = File::create(path).unwrap();
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for (name, mode, body) in [("bin/hello", 0o755, "#!/bin/sh\necho hello\n"), ("README", 0o644, "read me\n")] {
            let mut header = tar::Header::new_gnu();
            header.set_size(body.len() as u64);
            header.set_mode(mode);
            header.set_cksum();
            tar.append_data(&mut header, name, body.as_bytes()).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
    }

    #[test]
    fn a_file_archive_is_copied_and_extracted_with_its_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("app 1.tgz");
        tarball(&archive);
        let sandbox = dir.path().join("sandbox");
        let uri = format!("file://{}", archive.display().to_string().replace(' ', "%20"));
        fetch_all(&[item(serde_json::json!({"uri": uri}))], &sandbox, &dir.path().join("cache"), None, None).unwrap();
        assert!(sandbox.join("app 1.tgz").is_file(), "the archive is kept");
        assert_eq!(std::fs::read_to_string(sandbox.join("README")).unwrap(), "read me\n");
        let mode = std::fs::metadata(sandbox.join("bin/hello")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(!dir.path().join("cache").exists(), "nothing cached unless asked");
    }

    #[test]
    fn dest_path_executable_and_no_extract() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("tool.tar.gz");
        tarball(&archive);
        let sandbox = dir.path().join("sandbox");
        let fetch = item(serde_json::json!({
            "uri": format!("file://{}", archive.display()),
            "extract": false, "executable": true, "destPath": "opt/tool.tar.gz"
        }));
        fetch_all(&[fetch], &sandbox, &dir.path().join("cache"), None, None).unwrap();
        let mode = std::fs::metadata(sandbox.join("opt/tool.tar.gz")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(!sandbox.join("opt/README").exists(), "not extracted");
    }

    #[test]
    fn a_cached_artifact_is_used_again_after_its_source_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("data.txt");
        std::fs::write(&source, "v1").unwrap();
        let cache = dir.path().join("cache");
        let fetch = item(serde_json::json!({"uri": format!("file://{}", source.display()), "cache": true}));
        fetch_all(std::slice::from_ref(&fetch), &dir.path().join("a"), &cache, None, None).unwrap();
        std::fs::remove_file(&source).unwrap();
        fetch_all(std::slice::from_ref(&fetch), &dir.path().join("b"), &cache, None, None).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("b/data.txt")).unwrap(), "v1");
        // Without the cache it is fetched again, and fails, naming the URI and why.
        let uncached = Fetch { cache: false, ..fetch };
        let error = fetch_all(&[uncached], &dir.path().join("c"), &cache, None, None).unwrap_err();
        assert_eq!(error.uri, format!("file://{}", source.display()));
        assert!(error.to_string().contains("No such file"), "{error}");
    }

    #[test]
    fn a_zip_is_extracted_and_a_bad_archive_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.zip");
        let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
        zip.start_file("www/index.html", zip::write::SimpleFileOptions::default()).unwrap();
        zip.write_all(b"<h1>hi</h1>").unwrap();
        zip.finish().unwrap();
        let sandbox = dir.path().join("s");
        let fetch = item(serde_json::json!({"uri": format!("file://{}", path.display())}));
        fetch_all(&[fetch], &sandbox, &dir.path().join("cache"), None, None).unwrap();
        assert_eq!(std::fs::read_to_string(sandbox.join("www/index.html")).unwrap(), "<h1>hi</h1>");

        let bad = dir.path().join("broken.tgz");
        std::fs::write(&bad, "not gzip").unwrap();
        let fetch = item(serde_json::json!({"uri": format!("file://{}", bad.display())}));
        let error = fetch_all(&[fetch], &dir.path().join("t"), &dir.path().join("cache"), None, None).unwrap_err();
        assert!(error.to_string().contains("extracting broken.tgz (gzipped tar)"), "{error}");
    }

    #[test]
    fn a_download_over_the_disk_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.bin");
        std::fs::write(&big, vec![0u8; 2 << 20]).unwrap();
        let fetch = item(serde_json::json!({"uri": format!("file://{}", big.display())}));
        let error =
            fetch_all(&[fetch], &dir.path().join("s"), &dir.path().join("cache"), Some(1 << 20), None).unwrap_err();
        assert!(error.reason.contains("larger than the instance's disk of 1 MiB"), "{error}");
        assert!(!dir.path().join("s/big.bin").exists(), "nothing half-written");
    }

    #[test]
    fn disk_usage_counts_allocated_blocks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/f"), vec![1u8; 300_000]).unwrap();
        let used = disk_usage(dir.path()).unwrap();
        assert!((300_000..400_000).contains(&used), "{used}");
    }
}
