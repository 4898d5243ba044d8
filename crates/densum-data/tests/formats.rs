//! Every format, written small by the test itself, read back; and the error messages for
//! broken files name the file (and offset / member / line).

mod common;
use common::*;
use densum_data::{
    Dataset, Format, OpenOptions, Split, available_splits, open, open_splits, open_with,
};

fn check_cifar(ds: &dyn Dataset, seed: u32, n: u32, offset: usize, fine: bool) {
    for i in 0..n {
        let s = ds.get(offset + i as usize).unwrap();
        assert_eq!(s.image.pixels, to_hwc(&chw(seed, i)), "image {i}");
        let classes = if ds.num_classes() == 10 {
            10
        } else if fine {
            100
        } else {
            20
        };
        let fine_label = (i + seed) % if classes == 10 { 10 } else { 100 };
        let expect = if classes == 20 {
            fine_label % 20
        } else {
            fine_label
        };
        assert_eq!(s.label, expect as usize, "label {i}");
    }
}

#[test]
fn cifar10_binary_folder_and_archive() {
    let files = cifar_files("c10bin", 7);
    let d = tmp("c10bin");
    write_files(&d.join("cifar-10-batches-bin"), &files);
    // The folder itself, and its parent (extracted archive).
    for p in [d.join("cifar-10-batches-bin"), d.clone()] {
        let ds = open(&p, Split::Train).unwrap();
        assert_eq!(ds.format(), Format::Cifar10Binary);
        assert_eq!(ds.len(), 35);
        assert_eq!(ds.class_names()[3], "class3");
        check_cifar(&*ds, 1, 7, 0, true);
        check_cifar(&*ds, 3, 7, 14, true);
        let t = open(&p, Split::Test).unwrap();
        check_cifar(&*t, 0, 7, 0, true);
    }
    let a = d.join("arch");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::write(
        a.join("cifar-10-binary.tar.gz"),
        tar_gz("cifar-10-batches-bin", &files),
    )
    .unwrap();
    for p in [a.join("cifar-10-binary.tar.gz"), a.clone()] {
        let ds = open(&p, Split::Train).unwrap();
        assert_eq!(ds.len(), 35);
        check_cifar(&*ds, 5, 7, 28, true);
        assert_eq!(
            available_splits(&p).unwrap(),
            vec![Split::Train, Split::Test]
        );
    }
    let e = open(a.join("cifar-10-binary.tar.gz"), Split::Val)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("cifar-10-binary.tar.gz") && e.contains("val"),
        "{e}"
    );
}

#[test]
fn cifar10_python_folder_and_archive() {
    let files = cifar_files("c10py", 5);
    let d = tmp("c10py");
    write_files(&d, &files);
    let ds = open(&d, Split::Train).unwrap();
    assert_eq!(ds.format(), Format::Cifar10Python);
    assert_eq!(ds.len(), 25);
    assert_eq!(ds.class_names()[0], "label_names0");
    check_cifar(&*ds, 2, 5, 5, true);
    let t = d.join("c.tar.gz");
    std::fs::write(&t, tar_gz("cifar-10-batches-py", &files)).unwrap();
    let ds = open(&t, Split::Test).unwrap();
    check_cifar(&*ds, 0, 5, 0, true);
}

#[test]
fn cifar100_binary_and_python_fine_and_coarse() {
    for kind in ["c100bin", "c100py"] {
        let files = cifar_files(kind, 9);
        let d = tmp(kind);
        write_files(&d, &files);
        let ds = open(&d, Split::Train).unwrap();
        assert_eq!(ds.num_classes(), 100, "{kind}");
        assert_eq!(
            ds.class_names()[5],
            if kind == "c100bin" {
                "fine5"
            } else {
                "fine_label_names5"
            }
        );
        check_cifar(&*ds, 1, 9, 0, true);
        let c = open_with(
            &d,
            &OpenOptions {
                coarse_labels: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.num_classes(), 20);
        check_cifar(&*c, 1, 9, 0, false);
        let arch = d.join("x.tar.gz");
        std::fs::write(&arch, tar_gz("cifar-100", &files)).unwrap();
        let t = open(&arch, Split::Test).unwrap();
        check_cifar(&*t, 0, 9, 0, true);
    }
}

#[test]
fn svhn_plain_and_compressed_and_train_plus_extra() {
    for compressed in [false, true] {
        let d = tmp(&format!("svhn{compressed}"));
        let (f, expected) = svhn_mat(12, compressed);
        std::fs::write(d.join("train_32x32.mat"), &f).unwrap();
        std::fs::write(d.join("extra_32x32.mat"), &f).unwrap();
        let ds = open(&d, Split::Train).unwrap();
        assert_eq!(ds.format(), Format::SvhnMat);
        assert_eq!(ds.len(), 12);
        for (i, e) in expected.iter().enumerate() {
            let s = ds.get(i).unwrap();
            assert_eq!(&s.image.pixels, e);
            assert_eq!(s.label, (1 + i % 10) % 10, "label 10 means digit 0");
        }
        let both = open_splits(&d, &[Split::Train, Split::Extra], &OpenOptions::default()).unwrap();
        assert_eq!(both.len(), 24);
        assert_eq!(both.get(13).unwrap().image.pixels, expected[1]);
        let e = open(&d, Split::Test).err().unwrap().to_string();
        assert!(e.contains("test_32x32.mat"), "{e}");
    }
}

#[test]
fn image_folder_split_root_and_flat_val() {
    let d = tmp("folder");
    let paths = image_folder(&d.join("train"), &["b_cls", "a_cls", "c_cls"], 3);
    let ds = open(&d, Split::Train).unwrap();
    assert_eq!(ds.format(), Format::ImageFolder);
    assert_eq!(
        ds.class_names(),
        ["a_cls", "b_cls", "c_cls"],
        "sorted like torchvision"
    );
    assert_eq!(ds.len(), 9);
    // a_cls was written second (class index 1 in the writer), so it holds images 10..13.
    let s = ds.get(0).unwrap();
    assert_eq!(s.label, 0);
    assert_eq!(s.image.pixels, rgb(12, 10, 10).into_raw());
    assert_eq!(ds.item_name(0), paths[3].display().to_string());
    // The class root directly.
    assert_eq!(open(d.join("train"), Split::Test).unwrap().len(), 9);
    // Flat validation folder + labels file, classes taken from train/.
    let v = d.join("val");
    std::fs::create_dir_all(&v).unwrap();
    rgb(5, 6, 1).save(v.join("ILSVRC_0001.JPEG.png")).unwrap();
    rgb(5, 6, 2).save(v.join("ILSVRC_0002.png")).unwrap();
    std::fs::write(
        d.join("val_labels.txt"),
        "ILSVRC_0001.JPEG.png c_cls\nILSVRC_0002 a_cls\n",
    )
    .unwrap();
    let val = open(&d, Split::Val).unwrap();
    assert_eq!(val.format(), Format::FlatImageFolder);
    assert_eq!(val.num_classes(), 3);
    assert_eq!((val.label(0), val.label(1)), (2, 0));
    assert_eq!(val.get(1).unwrap().image.pixels, rgb(5, 6, 2).into_raw());
    assert_eq!(
        available_splits(&d).unwrap(),
        vec![Split::Train, Split::Val]
    );
    // An unknown class in the labels file: the error names the file and line.
    std::fs::write(
        d.join("val_labels.txt"),
        "ILSVRC_0001.JPEG.png c_cls\nILSVRC_0002 zebra\n",
    )
    .unwrap();
    let e = open(&d, Split::Val).err().unwrap().to_string();
    assert!(
        e.contains("val_labels.txt") && e.contains("line 2") && e.contains("zebra"),
        "{e}"
    );
    // Validation as class folders works too.
    let e = open(&d, Split::Test).err().unwrap().to_string();
    assert!(e.contains("missing split 'test'"), "{e}");
}

#[test]
fn jpeg_files_decode() {
    let d = tmp("jpeg");
    let c = d.join("cls");
    std::fs::create_dir_all(&c).unwrap();
    rgb(16, 16, 3).save(c.join("a.jpg")).unwrap();
    let ds = open(&d, Split::Train).unwrap();
    let s = ds.get(0).unwrap();
    assert_eq!((s.image.width, s.image.height), (16, 16));
    // Lossy, but close to the source.
    let src = rgb(16, 16, 3).into_raw();
    let max = s
        .image
        .pixels
        .iter()
        .zip(&src)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(max < 40, "{max}");
}
