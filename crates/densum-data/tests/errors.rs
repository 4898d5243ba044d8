//! Broken inputs give errors that name the file (and offset, member or line); never panics.

mod common;
use common::*;
use densum_data::{Split, open, verify};

fn err_of(p: &std::path::Path, split: Split) -> String {
    open(p, split).err().expect("should fail").to_string()
}

#[test]
fn truncated_and_missized_cifar_binary() {
    let d = tmp("err-bin");
    let mut files = cifar_files("c10bin", 3);
    files[2].1.truncate(3073 * 2 + 100); // data_batch_3.bin
    write_files(&d, &files);
    let e = err_of(&d, Split::Train);
    assert!(
        e.contains("data_batch_3.bin")
            && e.contains("offset 6146")
            && e.contains("record size 3073"),
        "{e}"
    );
    // Test split is intact.
    assert_eq!(open(&d, Split::Test).unwrap().len(), 3);
    // A label out of range names the record and offset.
    let mut t = c10_bin(0, 3);
    t[3073] = 42;
    std::fs::write(d.join("test_batch.bin"), t).unwrap();
    let e = err_of(&d, Split::Test);
    assert!(
        e.contains("test_batch.bin") && e.contains("record 1 at offset 3073") && e.contains("42"),
        "{e}"
    );
    // A missing batch file.
    std::fs::write(d.join("data_batch_3.bin"), c10_bin(3, 3)).unwrap();
    std::fs::remove_file(d.join("data_batch_5.bin")).unwrap();
    let e = err_of(&d, Split::Train);
    assert!(e.contains("data_batch_5.bin"), "{e}");
}

#[test]
fn cifar100_file_of_wrong_record_size() {
    let d = tmp("err-c100");
    write_files(
        &d,
        &[
            ("train.bin".into(), c10_bin(0, 4)),
            ("test.bin".into(), c100_bin(0, 2)),
        ],
    );
    let e = err_of(&d, Split::Train);
    assert!(e.contains("train.bin") && e.contains("3074"), "{e}");
}

#[test]
fn broken_pickles() {
    let d = tmp("err-pkl");
    let mut files = cifar_files("c10py", 2);
    let l = files[0].1.len();
    files[0].1.truncate(l / 2);
    files[5].1 = b"not a pickle at all".to_vec();
    write_files(&d, &files);
    let e = err_of(&d, Split::Train);
    assert!(e.contains("data_batch_1") && e.contains("offset"), "{e}");
    let e = err_of(&d, Split::Test);
    assert!(e.contains("test_batch") && e.contains("opcode"), "{e}");
}

#[test]
fn archive_problems() {
    let d = tmp("err-tar");
    let files = cifar_files("c10bin", 2);
    // Without the test member.
    let some: Vec<_> = files
        .iter()
        .filter(|f| f.0 != "test_batch.bin")
        .cloned()
        .collect();
    let p = d.join("cifar-10-binary.tar.gz");
    std::fs::write(&p, tar_gz("cifar-10-batches-bin", &some)).unwrap();
    let e = err_of(&p, Split::Test);
    assert!(
        e.contains("cifar-10-binary.tar.gz") && e.contains("test_batch.bin"),
        "{e}"
    );
    // Truncated archive.
    let full = tar_gz("cifar-10-batches-bin", &files);
    std::fs::write(&p, &full[..full.len() / 2]).unwrap();
    let e = err_of(&p, Split::Train);
    assert!(
        e.contains("cifar-10-binary.tar.gz") && (e.contains("member") || e.contains("corrupt")),
        "{e}"
    );
    // Not gzip at all.
    std::fs::write(&p, b"hello").unwrap();
    let e = err_of(&p, Split::Train);
    assert!(e.contains("cifar-10-binary.tar.gz"), "{e}");
    // A tar of unrelated files.
    std::fs::write(&p, tar_gz("x", &[("readme".into(), b"hi".to_vec())])).unwrap();
    let e = err_of(&p, Split::Train);
    assert!(e.contains("no CIFAR members"), "{e}");
}

#[test]
fn broken_mat_files() {
    let d = tmp("err-mat");
    let (f, _) = svhn_mat(3, true);
    std::fs::write(d.join("train_32x32.mat"), &f[..f.len() - 30]).unwrap();
    let e = err_of(&d, Split::Train);
    assert!(e.contains("train_32x32.mat") && e.contains("offset"), "{e}");
    let mut g = f.clone();
    g[0] = b'X';
    std::fs::write(d.join("train_32x32.mat"), &g).unwrap();
    let e = err_of(&d, Split::Train);
    assert!(e.contains("train_32x32.mat") && e.contains("magic"), "{e}");
    let (u, _) = svhn_mat(3, false);
    std::fs::write(d.join("train_32x32.mat"), &u[..200]).unwrap();
    let e = err_of(&d, Split::Train);
    assert!(
        e.contains("train_32x32.mat") && e.contains("truncated"),
        "{e}"
    );
}

#[test]
fn image_folder_problems() {
    let d = tmp("err-folder");
    image_folder(&d, &["a", "b"], 2);
    std::fs::create_dir_all(d.join("empty")).unwrap();
    let e = err_of(&d, Split::Train);
    assert!(
        e.contains("empty") && e.contains("empty class folder"),
        "{e}"
    );
    std::fs::remove_dir(d.join("empty")).unwrap();
    // Corrupt files: opening works (no decoding yet), verify lists every one.
    std::fs::write(d.join("a/001.png"), b"\x89PNG\r\n\x1a\ngarbage").unwrap();
    let mut j = Vec::new();
    rgb(8, 8, 0)
        .write_to(&mut std::io::Cursor::new(&mut j), image::ImageFormat::Jpeg)
        .unwrap();
    j.truncate(j.len() / 3);
    std::fs::write(d.join("b/000.png"), &j).unwrap();
    let ds = open(&d, Split::Train).unwrap();
    let e = ds.get(1).unwrap_err().to_string();
    assert!(e.contains("001.png"), "{e}");
    let r = verify(&*ds, 2).unwrap();
    assert_eq!(r.total, 4);
    let names: Vec<&str> = r.bad.iter().map(|b| b.item.as_str()).collect();
    assert_eq!(r.bad.len(), 2, "{names:?}");
    assert!(names[0].ends_with("a/001.png") && names[1].ends_with("b/000.png"));
}
