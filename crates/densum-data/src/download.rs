//! Downloads of the official archives: checksum-verified (md5, as published) and resumable
//! (an interrupted transfer continues from `FILE.part` with an HTTP `Range` request).

use crate::error::{Error, Result};
use md5::{Digest, Md5};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Datasets that can be downloaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Remote {
    /// CIFAR-10.
    Cifar10,
    /// CIFAR-100.
    Cifar100,
    /// SVHN format 2 (cropped digits).
    Svhn,
}

/// One file to fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteFile {
    /// Official URL.
    pub url: &'static str,
    /// Published md5.
    pub md5: &'static str,
}

/// Choices of [`download`].
#[derive(Clone, Debug, Default)]
pub struct DownloadOptions {
    /// CIFAR: the Python version instead of the binary one.
    pub python: bool,
    /// SVHN: leave out `extra_32x32.mat` (1.3 GB).
    pub skip_extra: bool,
    /// Fetch from this base URL instead of the official host (same file names); for
    /// mirrors and for tests.
    pub mirror: Option<String>,
}

impl Remote {
    /// The files of this dataset.
    pub fn files(self, opts: &DownloadOptions) -> Vec<RemoteFile> {
        let f = |url, md5| RemoteFile { url, md5 };
        match (self, opts.python) {
            (Remote::Cifar10, false) => vec![f(
                "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
                "c32a1d4ab5d03f1284b67883e8d87530",
            )],
            (Remote::Cifar10, true) => vec![f(
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                "c58f30108f718f92721af3b95e74349a",
            )],
            (Remote::Cifar100, false) => vec![f(
                "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
                "03b5dce01913d631647c71ecec9e9cb8",
            )],
            (Remote::Cifar100, true) => vec![f(
                "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                "eb9058c3a382ffc7106e4002c42a8d85",
            )],
            (Remote::Svhn, _) => {
                let mut v = vec![
                    f(
                        "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
                        "e26dedcc434d2e4c54c9b2d4a06d8373",
                    ),
                    f(
                        "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
                        "eb5a983be6a315427106f1b9d8ee2fa3",
                    ),
                ];
                if !opts.skip_extra {
                    v.push(f(
                        "http://ufldl.stanford.edu/housenumbers/extra_32x32.mat",
                        "a93ce644f1a588dc4d68dda5feec44a7",
                    ));
                }
                v
            }
        }
    }
}

/// Downloads the files of `which` into `dir` (created if needed); returns their paths.
/// Files already present with the right checksum are not fetched again.
pub fn download(which: Remote, dir: &Path, opts: &DownloadOptions) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();
    for f in which.files(opts) {
        let name = f.url.rsplit('/').next().unwrap_or(f.url);
        let url = match &opts.mirror {
            Some(m) => format!("{}/{name}", m.trim_end_matches('/')),
            None => f.url.to_string(),
        };
        out.push(download_file(&url, &dir.join(name), f.md5)?);
    }
    Ok(out)
}

/// md5 of a file, lowercase hex.
pub fn md5_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

fn part_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

/// Fetches `url` to `dest`, resuming from `dest.part` if a previous transfer was cut, and
/// checks the md5. On a mismatch the partial file is removed (so the next try starts over)
/// and the error names both checksums.
pub fn download_file(url: &str, dest: &Path, md5: &str) -> Result<PathBuf> {
    if dest.is_file() {
        let got = md5_file(dest)?;
        if got.eq_ignore_ascii_case(md5) {
            return Ok(dest.to_path_buf());
        }
        return Err(Error::Checksum {
            path: dest.to_path_buf(),
            expected: md5.to_string(),
            actual: got,
        });
    }
    let part = part_path(dest);
    let dl = |m: String| Error::Download {
        url: url.to_string(),
        msg: m,
    };
    let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(60))
        .build();
    let mut req = agent.get(url);
    if have > 0 {
        req = req.set("Range", &format!("bytes={have}-"));
    }
    let resp = match req.call() {
        Ok(r) => Some(r),
        // The partial file already holds everything: only the checksum is left to do.
        Err(ureq::Error::Status(416, _)) if have > 0 => None,
        Err(ureq::Error::Status(code, r)) => {
            return Err(dl(format!("HTTP {code} {}", r.status_text())));
        }
        Err(e) => return Err(dl(e.to_string())),
    };
    if let Some(resp) = resp {
        // 206 with the expected start: append. Anything else (200): the server ignores
        // ranges, so start over.
        let resume = resp.status() == 206
            && resp
                .header("Content-Range")
                .is_some_and(|c| c.starts_with(&format!("bytes {have}-")));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(resume)
            .truncate(!resume)
            .open(&part)
            .map_err(|e| Error::io(&part, e))?;
        let mut body = resp.into_reader();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = body.read(&mut buf).map_err(|e| {
                dl(format!(
                    "transfer interrupted ({e}); run the same command again to resume from {}",
                    part.display()
                ))
            })?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n]).map_err(|e| Error::io(&part, e))?;
        }
        file.flush().map_err(|e| Error::io(&part, e))?;
    }
    let got = md5_file(&part)?;
    if !got.eq_ignore_ascii_case(md5) {
        let _ = std::fs::remove_file(&part);
        return Err(Error::Checksum {
            path: dest.to_path_buf(),
            expected: md5.to_string(),
            actual: got,
        });
    }
    std::fs::rename(&part, dest).map_err(|e| Error::io(dest, e))?;
    Ok(dest.to_path_buf())
}
