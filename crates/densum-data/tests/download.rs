//! Downloads against a local HTTP server started by the test (127.0.0.1 only): a complete
//! transfer, an interrupted one resumed with a Range request, and a checksum mismatch.

mod common;
use densum_data::download::{DownloadOptions, Remote, download, download_file, md5_file};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// Serves `body` for any path; the first `cut_first` connections are cut after half the
/// body. Records the Range header of every request. Handles at most `max` connections.
fn serve(body: Vec<u8>, cut_first: usize, max: usize) -> (String, Arc<Mutex<Vec<Option<String>>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", l.local_addr().unwrap());
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let r2 = ranges.clone();
    std::thread::spawn(move || {
        for (k, s) in l.incoming().take(max).enumerate() {
            let mut s = s.unwrap();
            let mut rd = BufReader::new(s.try_clone().unwrap());
            let mut range = None;
            loop {
                let mut line = String::new();
                if rd.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    range = Some(v.trim().trim_end_matches('-').to_string());
                }
            }
            r2.lock().unwrap().push(range.clone());
            let start: usize = range.as_deref().map_or(0, |r| r.parse().unwrap());
            let head = if start > 0 {
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{}\r\nConnection: close\r\n\r\n",
                    body.len() - start,
                    body.len() - 1,
                    body.len()
                )
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
            };
            let _ = s.write_all(head.as_bytes());
            let end = if k < cut_first {
                start + (body.len() - start) / 2
            } else {
                body.len()
            };
            let _ = s.write_all(&body[start..end]);
            let _ = s.flush();
        }
    });
    (addr, ranges)
}

fn md5_of(b: &[u8]) -> String {
    let d = common::tmp("md5");
    std::fs::write(d.join("f"), b).unwrap();
    md5_file(&d.join("f")).unwrap()
}

#[test]
fn interrupted_download_resumes_and_verifies() {
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let sum = md5_of(&body);
    let (url, ranges) = serve(body.clone(), 1, 2);
    let d = common::tmp("dl-resume");
    let dest = d.join("file.bin");
    let e = download_file(&format!("{url}/file.bin"), &dest, &sum)
        .unwrap_err()
        .to_string();
    assert!(e.contains("interrupted") && e.contains("resume"), "{e}");
    let part = d.join("file.bin.part");
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 150_000);
    download_file(&format!("{url}/file.bin"), &dest, &sum).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert!(!part.exists());
    assert_eq!(
        *ranges.lock().unwrap(),
        vec![None, Some("150000".to_string())]
    );
    // Present with the right checksum: nothing fetched (the server is gone by now).
    download_file(&format!("{url}/file.bin"), &dest, &sum).unwrap();
}

#[test]
fn checksum_mismatch_is_reported_and_partial_removed() {
    let (url, _) = serve(b"not the real archive".to_vec(), 0, 1);
    let d = common::tmp("dl-bad");
    let opts = DownloadOptions {
        mirror: Some(url),
        ..Default::default()
    };
    let e = download(Remote::Cifar10, &d, &opts)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cifar-10-binary.tar.gz") && e.contains("c32a1d4ab5d03f1284b67883e8d87530"),
        "{e}"
    );
    assert!(!d.join("cifar-10-binary.tar.gz.part").exists());
    assert!(!d.join("cifar-10-binary.tar.gz").exists());
}

#[test]
fn http_errors_name_the_url() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/x.mat", l.local_addr().unwrap());
    std::thread::spawn(move || {
        if let Some(Ok(mut s)) = l.incoming().next() {
            let mut rd = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            while rd.read_line(&mut line).unwrap_or(0) > 2 {
                line.clear();
            }
            let _ = s.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let d = common::tmp("dl-404");
    let e = download_file(&url, &d.join("x.mat"), "00")
        .unwrap_err()
        .to_string();
    assert!(e.contains(&url) && e.contains("404"), "{e}");
}

#[test]
fn official_file_lists() {
    let all = Remote::Svhn.files(&DownloadOptions::default());
    assert_eq!(all.len(), 3);
    assert!(all[2].url.ends_with("extra_32x32.mat"));
    let py = Remote::Cifar100.files(&DownloadOptions {
        python: true,
        ..Default::default()
    });
    assert_eq!(py[0].md5, "eb9058c3a382ffc7106e4002c42a8d85");
}
